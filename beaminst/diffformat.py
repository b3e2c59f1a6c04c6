"""How ``beaminst diff`` prints a :class:`beaminst.diff.Diff` for people: a
rich tree grouped by kind of change (``--json`` is ``Diff.to_json``).

Names, tags, URNs and descriptions come from the files, so every one goes
through :func:`beaminst.terminal.markup`.
"""

from __future__ import annotations

from typing import Any

from beaminst.diff import PAYLOAD_PREFIX_BYTES, Diff


def nested_counts(entries: list[dict[str, Any]]) -> dict[str, int]:
    """For each outermost added (removed) transform, how many of ``entries``
    lie inside it. Linear: each name's outermost ancestor is found once
    (a walk per entry is quadratic in the nesting depth)."""
    by_name = {e["name"]: e for e in entries}
    top: dict[str, str] = {}
    counts: dict[str, int] = {}
    for e in entries:
        path, name = [], e["name"]
        while name not in top and not by_name[name]["outermost"]:
            path.append(name)
            name = by_name[name]["parent"]
        outer = top.get(name, name)
        top[name] = outer
        for p in path:
            top[p] = outer
        if not e["outermost"]:
            counts[outer] = counts.get(outer, 0) + 1
    return counts


def _ref_text(ref: dict[str, str]) -> str:
    return f"{ref['producer']}.{ref['tag']}"


def _payload_text(p: dict[str, Any]) -> str:
    return f"{p['length']} B, digest {p['digest']}"


def _first_difference_text(change: dict[str, Any]) -> str:
    at = change["first_difference"]
    return f"first difference at byte {at}" if at is not None else ""


def change_text(what: str, change: dict[str, Any]) -> tuple[str, str]:
    """A transform field change as (before, after) text for people."""
    was, now = change["before"], change["after"]
    if what == "payload":
        return _payload_text(was), _payload_text(now)
    if what == "environment":
        def env(e: dict[str, str] | None) -> str:
            return "(none)" if e is None else f"{e['urn']} {e['digest']}"

        return env(was), env(now)
    if what in ("inputs", "outputs"):
        def refs(m: dict[str, dict[str, str]]) -> str:
            return ", ".join(f"{t}={_ref_text(r)}" for t, r in m.items()) or "(none)"

        return refs(was), refs(now)
    if what == "subtransforms":
        return ", ".join(was) or "(none)", ", ".join(now) or "(none)"
    if isinstance(was, dict):  # coder, windowing: {"digest", "description"}
        return was["description"], now["description"]
    return str(was), str(now)


# --- the rich tree -------------------------------------------------------------


def print_tree(console: Any, d: Diff, show_payloads: bool = False) -> None:
    """A rich tree grouped by kind of change; instrumented additions in magenta."""
    from rich.tree import Tree

    from beaminst.terminal import markup

    if d.identical:
        console.print(f"[green]identical[/green]: {markup(d.before)} and {markup(d.after)} have the same structure")
        return
    tree = Tree(f"[bold]beaminst diff[/bold] {markup(d.before)} → {markup(d.after)}")
    _tree_transform_set(tree, d.transforms["added"], "added", "green", "+", show_payloads)
    _tree_transform_set(tree, d.transforms["removed"], "removed", "red", "-", show_payloads)
    if d.transforms["changed"]:
        branch = tree.add(f"[bold yellow]Transforms changed[/bold yellow] ({len(d.transforms['changed'])})")
        for t in d.transforms["changed"]:
            node = branch.add(f"[yellow]~[/yellow] {markup(t['name'])} [dim]{markup(t['urn'] or '(no urn)')}[/dim]")
            for what, change in t["changes"].items():
                _tree_field_change(node, what, change, show_payloads)
    if d.rewired:
        branch = tree.add(f"[bold cyan]Inputs rewired[/bold cyan] ({len(d.rewired)})")
        for r in d.rewired:
            mark = " [magenta](instrumented)[/magenta]" if r["instrumented"] else ""
            kind = " side input" if r["side_input"] else ""
            where = "" if r["leaf"] else " [dim](composite)[/dim]"
            branch.add(
                f"{markup(r['transform'])} [dim]\\[{markup(r['tag'])}{kind}][/dim]{where}: "
                f"{markup(_ref_text(r['before']))} → [cyan]{markup(_ref_text(r['after']))}[/cyan]{mark}"
            )
    _tree_pcollection_set(tree, d.pcollections["added"], "added", "green", "+")
    _tree_pcollection_set(tree, d.pcollections["removed"], "removed", "red", "-")
    if d.pcollections["changed"]:
        branch = tree.add(f"[bold yellow]PCollections changed[/bold yellow] ({len(d.pcollections['changed'])})")
        for p in d.pcollections["changed"]:
            node = branch.add(f"[yellow]~[/yellow] {markup(_ref_text(p))}")
            for what, change in p["changes"].items():
                was, now = change_text(what, change)
                node.add(f"{what}: {markup(was)} → {markup(now)}")
    for kind, changes in d.components.items():
        for change, colour, mark in (("added", "green", "+"), ("removed", "red", "-")):
            if changes[change]:
                title = f"{kind.replace('_', ' ').capitalize()} {change}"
                branch = tree.add(f"[bold {colour}]{title}[/bold {colour}] ({len(changes[change])})")
                for c in changes[change]:
                    branch.add(f"[{colour}]{mark}[/{colour}] {markup(c['description'])} [dim]{c['digest']} ({markup(', '.join(c['ids']))})[/dim]")
    for change, colour, mark in (("added", "green", "+"), ("removed", "red", "-")):
        if d.requirements.get(change):
            branch = tree.add(f"[bold {colour}]Requirements {change}[/bold {colour}]")
            for r in d.requirements[change]:
                branch.add(f"[{colour}]{mark}[/{colour}] {markup(r)}")
    console.print(tree)
    counts = ", ".join(f"{k.replace('_', ' ')}: {n}" for k, n in d.summary().items() if n)
    console.print(f"differences: {counts}")


def _tree_transform_set(tree: Any, entries: list[dict[str, Any]], change: str, colour: str, mark: str, show_payloads: bool) -> None:
    from beaminst.terminal import markup

    if not entries:
        return
    n_inst = sum(1 for e in entries if e["instrumented"])
    extra = f", {n_inst} instrumented" if n_inst else ""
    branch = tree.add(f"[bold {colour}]Transforms {change}[/bold {colour}] ({len(entries)}{extra})")
    nested = nested_counts(entries)
    for e in entries:
        if not e["outermost"]:
            continue
        style = "magenta" if e["instrumented"] else colour
        tag = " [magenta](instrumented)[/magenta]" if e["instrumented"] else ""
        more = f" [dim]+{nested[e['name']]} nested[/dim]" if nested.get(e["name"]) else ""
        node = branch.add(
            f"[{style}]{mark} {markup(e['name'])}[/{style}]{tag} [dim]{markup(e['urn'] or '(no urn)')}, "
            f"{e['payload']['length']} B payload[/dim]{more}"
        )
        if show_payloads and e["payload"]["length"]:
            node.add(f"[dim]payload[/dim] {markup(e['payload']['prefix'])}{'…' if e['payload']['length'] > PAYLOAD_PREFIX_BYTES else ''}")
    if nested:
        branch.add("[dim](nested transforms are listed one by one in --json)[/dim]")


def _tree_field_change(node: Any, what: str, change: dict[str, Any], show_payloads: bool) -> None:
    from beaminst.terminal import markup

    was, now = change_text(what, change)
    if what == "payload":
        where = f", {_first_difference_text(change)}" if change["first_difference"] is not None else ""
        sub = node.add(f"payload: {was} → {now}{where}")
        if show_payloads:
            for label in ("before", "after"):
                p = change[label]
                sub.add(f"[dim]{label} @{p['prefix_offset']}[/dim] {markup(p['prefix'])}")
        return
    node.add(f"{what}: {markup(was)} → {markup(now)}")


def _tree_pcollection_set(tree: Any, entries: list[dict[str, Any]], change: str, colour: str, mark: str) -> None:
    from beaminst.terminal import markup

    if not entries:
        return
    shown = [e for e in entries if not e["implied"]]
    hidden = len(entries) - len(shown)
    note = f"; {hidden} output(s) of {change} transforms not shown" if hidden else ""
    branch = tree.add(f"[bold {colour}]PCollections {change}[/bold {colour}] ({len(entries)}{note})")
    for e in shown:
        style = "magenta" if e["instrumented"] else colour
        branch.add(
            f"[{style}]{mark} {markup(_ref_text(e))}[/{style}] [dim]{markup(e['coder']['description'])}, "
            f"{e['is_bounded'].lower()}[/dim]"
        )
