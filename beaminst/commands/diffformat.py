"""How ``beaminst diff`` prints a :class:`beaminst.commands.diff.Diff`: a rich tree for
a terminal, plain tab-separated lines for pipes, Markdown for a pull-request
comment (``--json`` is ``Diff.to_json``).

Names, tags, URNs and descriptions come from the files, so every one is
escaped: in the tree by :func:`beaminst.commands.terminal.markup`, elsewhere by
:func:`beaminst.errors.printable` (a tab or newline in a name becomes
``\\x09`` / ``\\x0a``, so a plain record stays one line of fixed fields).

Plain records, one a line, fields separated by tabs, never wrapped or cut::

    +  transform    NAME      URN     FLAGS [PAYLOAD_PREFIX]
    -  transform    NAME      URN     FLAGS [PAYLOAD_PREFIX]
    ~  transform    NAME      FIELD   BEFORE  AFTER [NOTE [PREFIX_BEFORE PREFIX_AFTER]]
    ~  input        TRANSFORM TAG     BEFORE_PRODUCER BEFORE_TAG AFTER_PRODUCER AFTER_TAG FLAGS
    +  pcollection  PRODUCER  TAG     CODER   BOUNDEDNESS FLAGS
    -  pcollection  PRODUCER  TAG     CODER   BOUNDEDNESS FLAGS
    ~  pcollection  PRODUCER  TAG     FIELD   BEFORE  AFTER
    +  coder | windowing_strategy | environment   DESCRIPTION DIGEST IDS
    -  (the same)
    +  requirement  URN
    -  requirement  URN

FLAGS is a comma-separated list (possibly empty) of ``instrumented``,
``nested`` (inside an added / removed composite), ``composite``, ``implied``
(output of an added / removed transform) and ``side_input``. Identical
pipelines print nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from beaminst.commands.diff import PAYLOAD_PREFIX_BYTES, Diff
from beaminst.errors import printable

HUMAN, PLAIN, MARKDOWN, JSON = "human", "plain", "markdown", "json"
FORMATS = (HUMAN, PLAIN, MARKDOWN, JSON)
MARKDOWN_LISTED = 50  # per list: a pull-request comment is read, not searched

_CHANGES = (("added", "+"), ("removed", "-"))
_COMPONENT_KINDS = {"coders": "coder", "windowing_strategies": "windowing_strategy", "environments": "environment"}


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
    fields = change.get("fields") or ()
    where = f", in {', '.join(fields)}" if fields else ""
    return f"first difference at byte {at}{where}" if at is not None else ""


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
        if was["description"] == now["description"]:  # what differs is not spelled out (a pickle's bytes): the digests say
            return f"{was['description']} ({was['digest']})", f"{now['description']} ({now['digest']})"
        return was["description"], now["description"]
    return str(was), str(now)


# --- plain lines ---------------------------------------------------------------


def _record(*fields: object) -> str:
    return "\t".join(printable(str(f)) for f in fields)


def _flags(**set_: bool) -> str:
    return ",".join(name for name, on in set_.items() if on)


def plain_lines(d: Diff, show_payloads: bool = False) -> Iterator[str]:
    """Every difference as one tab-separated record (see the module docstring)."""
    for change, mark in _CHANGES:
        for e in d.transforms[change]:
            flags = _flags(instrumented=e["instrumented"], nested=not e["outermost"], composite=not e["leaf"])
            prefix = (e["payload"]["prefix"],) if show_payloads else ()
            yield _record(mark, "transform", e["name"], e["urn"], flags, *prefix)
    for t in d.transforms["changed"]:
        for what, change in t["changes"].items():
            extra: tuple[str, ...] = ()
            if what == "payload":
                extra = (_first_difference_text(change),)
                if show_payloads:
                    extra += (change["before"]["prefix"], change["after"]["prefix"])
            yield _record("~", "transform", t["name"], what, *change_text(what, change), *extra)
    for r in d.rewired:
        flags = _flags(instrumented=r["instrumented"], side_input=r["side_input"], composite=not r["leaf"])
        b, a = r["before"], r["after"]
        yield _record("~", "input", r["transform"], r["tag"], b["producer"], b["tag"], a["producer"], a["tag"], flags)
    for change, mark in _CHANGES:
        for p in d.pcollections[change]:
            flags = _flags(instrumented=p["instrumented"], implied=p["implied"])
            yield _record(mark, "pcollection", p["producer"], p["tag"], p["coder"]["description"], p["is_bounded"], flags)
    for p in d.pcollections["changed"]:
        for what, change in p["changes"].items():
            yield _record("~", "pcollection", p["producer"], p["tag"], what, *change_text(what, change))
    for kind, changes in d.components.items():
        for change, mark in _CHANGES:
            for c in changes[change]:
                yield _record(mark, _COMPONENT_KINDS[kind], c["description"], c["digest"], ",".join(c["ids"]))
    for change, mark in _CHANGES:
        for urn in d.requirements.get(change, ()):
            yield _record(mark, "requirement", urn)


def write_plain(out: Any, d: Diff, show_payloads: bool = False) -> None:
    for line in plain_lines(d, show_payloads):
        out.write(line + "\n")


# --- Markdown ------------------------------------------------------------------

_BACKTICKS = re.compile(r"`+")


def code(text: object) -> str:
    """``text`` as a Markdown code span: a fence longer than any run of
    backticks inside (Markdown has no backslash escapes in code), padded when
    the text starts or ends with a backtick or a space that would be trimmed.
    HTML, ``*`` and ``@`` in a code span are literal; unprintable characters
    are escaped first, so a name cannot end the line or the list."""
    s = printable(str(text))
    fence = "`" * (max((len(m) for m in _BACKTICKS.findall(s)), default=0) + 1)
    if s.startswith("`") or s.endswith("`") or (s.startswith(" ") and s.endswith(" ") and s.strip()):
        s = f" {s} "
    return f"{fence}{s}{fence}"


def _capped(title: str, lines: list[str], limit: int, note: str = "") -> list[str]:
    """A section: heading, an optional note, then at most ``limit`` items."""
    out = ["", f"#### {title}", ""]
    if note:
        out += [note, ""]
    out += lines[:limit]
    if len(lines) > limit:
        out.append(f"- … and {len(lines) - limit} more (`beaminst diff --format plain` lists them all)")
    return out


def _notes(*pairs: tuple[str, bool]) -> str:
    """`` (a, b)`` for the notes that apply, else nothing."""
    notes = [text for text, on in pairs if on]
    return f" ({', '.join(notes)})" if notes else ""


def _counts_table(d: Diff) -> list[str]:
    s = d.summary()
    n_inst = sum(1 for e in d.transforms["added"] if e["instrumented"])
    rows: list[tuple[str, object, object, object]] = [
        ("Transforms", f"{s['transforms_added']}" + (f" ({n_inst} instrumented)" if n_inst else ""),
         s["transforms_removed"], s["transforms_changed"]),
        ("Inputs rewired", "", "", s["inputs_rewired"]),
        ("PCollections", s["pcollections_added"], s["pcollections_removed"], s["pcollections_changed"]),
    ]
    rows += [(k.replace("_", " ").capitalize(), len(v["added"]), len(v["removed"]), "") for k, v in d.components.items()]
    rows.append(("Requirements", s["requirements_added"], s["requirements_removed"], ""))
    return ["| | added | removed | changed |", "|:--|--:|--:|--:|", *(f"| {n} | {a} | {r} | {c} |" for n, a, r, c in rows)]


def _md_transform_set(entries: list[dict[str, Any]], change: str, limit: int) -> list[str]:
    if not entries:
        return []
    nested = nested_counts(entries)
    inst = sum(1 for e in entries if e["instrumented"])
    outermost = [e for e in entries if e["outermost"]]
    hidden = len(entries) - len(outermost)
    lines = [
        f"- {code(e['name'])} {code(e['urn'] or '(no urn)')}"
        + _notes(("instrumented", e["instrumented"]), (f"+{nested.get(e['name'])} nested", e["name"] in nested))
        for e in outermost
    ]
    title = f"Transforms {change} ({len(entries)}" + (f", {inst} instrumented)" if inst else ")")
    return _capped(title, lines, limit, f"{hidden} of them nested in the ones listed." if hidden else "")


def _md_field(what: str, change: dict[str, Any]) -> str:
    was, now = change_text(what, change)
    at = change.get("first_difference") if what == "payload" else None
    return f"{what} {code(was)} → {code(now)}" + (f", {_first_difference_text(change)}" if at is not None else "")


def _md_rewired(r: dict[str, Any]) -> str:
    return (
        f"- {code(r['transform'])} [{code(r['tag'])}]: {code(_ref_text(r['before']))} → {code(_ref_text(r['after']))}"
        + _notes(("side input", r["side_input"]), ("composite", not r["leaf"]), ("instrumented", r["instrumented"]))
    )


def markdown(d: Diff, limit: int = MARKDOWN_LISTED) -> str:
    """A summary for a pull-request comment: heading, counts table, then the
    transforms added and removed (outermost ones), changed, rewired inputs,
    PCollections changed and requirements, each list capped at ``limit``.
    Names never sit in a table cell, so a ``|`` in one needs no escape."""
    out = [f"### beaminst diff: {code(d.before)} → {code(d.after)}", ""]
    if d.identical:
        return "\n".join([*out, "No structural differences.", ""])
    out += _counts_table(d)
    out += _md_transform_set(d.transforms["added"], "added", limit)
    out += _md_transform_set(d.transforms["removed"], "removed", limit)
    changed = d.transforms["changed"]
    if changed:
        lines = [f"- {code(t['name'])}: " + "; ".join(_md_field(w, c) for w, c in t["changes"].items()) for t in changed]
        out += _capped(f"Transforms changed ({len(changed)})", lines, limit)
    if d.rewired:
        out += _capped(f"Inputs rewired ({len(d.rewired)})", [_md_rewired(r) for r in d.rewired], limit)
    pcs = d.pcollections["changed"]
    if pcs:
        lines = [f"- {code(_ref_text(p))}: " + "; ".join(_md_field(w, c) for w, c in p["changes"].items()) for p in pcs]
        out += _capped(f"PCollections changed ({len(pcs)})", lines, limit)
    for change in ("added", "removed"):
        urns = d.requirements.get(change, [])
        if urns:
            out += _capped(f"Requirements {change} ({len(urns)})", [f"- {code(u)}" for u in urns], limit)
    return "\n".join([*out, ""])


# --- the rich tree -------------------------------------------------------------


def print_tree(console: Any, d: Diff, show_payloads: bool = False) -> None:
    """A rich tree grouped by kind of change; instrumented additions in magenta."""
    from rich.tree import Tree

    from beaminst.commands.terminal import markup

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
    from beaminst.commands.terminal import markup

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
        branch.add("[dim](nested transforms are listed one by one in --format plain and --json)[/dim]")


def _tree_field_change(node: Any, what: str, change: dict[str, Any], show_payloads: bool) -> None:
    from beaminst.commands.terminal import markup

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
    from beaminst.commands.terminal import markup

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
