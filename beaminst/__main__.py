"""``python -m beaminst``: the same program as the ``beaminst`` script."""

from beaminst.cli import entry

entry()
