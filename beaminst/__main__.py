"""``python -m beaminst``: the same CLI as the ``beaminst`` script."""

from beaminst.cli import main

main(prog_name="beaminst")
