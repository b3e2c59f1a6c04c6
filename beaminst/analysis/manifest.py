"""The variable-binding manifest: which user variables name which PCollections.

It is the saved-proto counterpart of what Interactive Beam learns by watching a
notebook's variables (``ie.current_env().watch(...)``) and of its
``computed_pcollections`` set. See ``manifest.schema.json`` (shipped in the
package) for the format; :func:`load_manifest` validates against it, and
:func:`resolve_bindings` checks every name against the pipeline.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from beaminst.analysis.suggest import did_you_mean
from beaminst.errors import ManifestError
from beaminst.graph.index import GraphIndex
from beaminst.model.jsondepth import check_json_depth

MAIN_TAG = "None"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
# A manifest is four levels deep; anything far deeper is not one, and would
# make the schema check and error messages recurse into Python's stack limit.
MAX_DEPTH = 32
# Cache keys become file names, Beam's cache lookup globs '<key>*-*-of-*',
# and grafting swaps them byte for byte inside pickles: ASCII, no glob or
# path characters, nothing whose UTF-8 length differs from its length. The
# schema says the same; this is exact (a JSON Schema '$' also matches before
# a final newline).
_CACHE_KEY = re.compile(r"[A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+){3}")
CACHE_KEY_RULE = "four parts of ASCII letters, digits, '_' and '.', joined by '-'"


@dataclass(frozen=True)
class Binding:
    var: str
    pcollection: str | None = None
    producer: str | None = None
    tag: str = MAIN_TAG
    cache_key: str | None = None


@dataclass(frozen=True)
class Manifest:
    bindings: tuple[Binding, ...] = ()
    computed: frozenset[str] = frozenset()
    source: str = "<manifest>"
    # "computed": "auto": every binding whose complete cache exists counts as computed.
    reuse: bool = False


@dataclass(frozen=True)
class ResolvedBinding:
    var: str
    pcollection: str
    cache_key: str | None
    computed: bool


@dataclass
class Resolved:
    """Bindings resolved to PCollection ids, in manifest order."""

    by_var: dict[str, ResolvedBinding] = field(default_factory=dict)


@cache
def manifest_schema() -> dict[str, Any]:
    return json.loads(resources.files("beaminst.analysis").joinpath("manifest.schema.json").read_text("utf-8"))


def load_manifest(path: str | None) -> Manifest:
    """Load and schema-check a manifest (``None`` gives an empty one)."""
    if path is None:
        return Manifest()
    from beaminst.model.protoio import read_bytes

    source = "<stdin>" if path == "-" else path
    try:
        raw = read_bytes(path, "a manifest file (JSON)", MAX_MANIFEST_BYTES)
    except Exception as e:  # re-badge: it is the manifest that failed
        raise ManifestError(getattr(e, "message", str(e)), getattr(e, "source", None) or path) from None
    return parse_manifest(raw, source)


def parse_manifest(raw: bytes, source: str = "<manifest>") -> Manifest:
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest is {len(raw)} bytes, over the {MAX_MANIFEST_BYTES} byte limit", source)
    skip = 3 if raw.startswith(b"\xef\xbb\xbf") else 0  # a BOM (some editors write one) is not an error
    try:
        text = raw[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestError(f"not UTF-8 (byte {e.start + skip}){_swapped(raw)}", source) from None
    if not text.strip():  # a closed stdin (-m - <&-) or an empty file: say so, not "line 1 column 1"
        raise ManifestError("not valid JSON: empty, expected a binding manifest (a JSON object)", source)
    try:
        check_json_depth(text, MAX_DEPTH)
    except ValueError:
        raise ManifestError(f"nested more than {MAX_DEPTH} levels deep; not a binding manifest", source) from None
    try:
        doc = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except ManifestError as e:
        raise e.with_source(source) from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise ManifestError(f"not valid JSON: {e}{_swapped(raw)}", source) from None
    except ValueError:  # an integer past Python's conversion limit: its advice (a sys call) is no help here
        raise ManifestError(
            f"holds a number of more than {sys.get_int_max_str_digits()} digits; not a binding manifest", source
        ) from None
    _check_depth_and_strings(doc, source)
    if isinstance(doc, dict) and {"components", "rootTransformIds", "root_transform_ids"} & set(doc):
        raise ManifestError(f"holds a pipeline's fields{_swapped(raw)}", source)
    _check_schema(doc, source)
    bindings = []
    for var, spec in doc.get("bindings", {}).items():
        if isinstance(spec, str):
            bindings.append(Binding(var, pcollection=spec))
        elif "pcollection" in spec:
            bindings.append(Binding(var, pcollection=spec["pcollection"], cache_key=spec.get("cache_key")))
        else:
            bindings.append(
                Binding(var, producer=spec["producer"], tag=spec.get("tag", MAIN_TAG), cache_key=spec.get("cache_key"))
            )
    pinned: dict[str, str] = {}
    for b in bindings:
        if b.cache_key is not None:
            _check_cache_key(b, source)
            if b.cache_key in pinned:
                raise ManifestError(
                    f"bindings/{b.var}/cache_key: {b.cache_key!r} is already the cache key of "
                    f"{pinned[b.cache_key]!r}; two PCollections cannot share one cache file",
                    source,
                )
            pinned[b.cache_key] = b.var
    # Beam's reader globs '<key>*-*-of-*': a key that begins another reads its
    # shards too. Sorted, such a pair is adjacent (what lies between a key and
    # one it begins begins with it too).
    keys = sorted(pinned)
    for short, long in zip(keys, keys[1:], strict=False):
        if long.startswith(short):
            raise ManifestError(
                f"bindings/{pinned[short]}/cache_key: {short!r} begins the cache key of {pinned[long]!r} "
                f"({long!r}); Beam reads a cache by the pattern '<key>*-*-of-*', so it would read both",
                source,
            )
    computed = doc.get("computed", [])
    if computed == "auto":
        return Manifest(tuple(bindings), frozenset(), source, reuse=True)
    known = {b.var for b in bindings}
    for var in computed:
        if var not in known:
            raise ManifestError(f"computed: {var!r} is not a bound variable{did_you_mean(var, known)}", source)
    return Manifest(tuple(bindings), frozenset(computed), source)


def _swapped(raw: bytes) -> str:
    """A hint when the manifest is a pipeline (the arguments swapped)."""
    from beaminst.model.protoio import looks_like_pipeline

    if looks_like_pipeline(raw):
        return "; this is a pipeline proto, not a binding manifest: pass it as PIPELINE, the manifest (JSON) with -m"
    return ""


def _check_depth_and_strings(doc: Any, source: str) -> None:
    """Reject nesting deeper than MAX_DEPTH and strings that are not valid
    Unicode (a JSON ``\\ud800`` escape decodes to a lone surrogate, which no
    file name, hash or terminal accepts). Iterative: never recurses."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(doc, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_DEPTH:
            where = "/".join(path[:3])
            raise ManifestError(f"{where}/...: nested more than {MAX_DEPTH} levels deep; not a binding manifest", source)
        if isinstance(value, str):
            _check_unicode(value, path, source)
        elif isinstance(value, dict):
            for k, v in value.items():
                _check_unicode(k, path, source)
                stack.append((v, (*path, k)))
        elif isinstance(value, list):
            stack.extend((v, (*path, str(i))) for i, v in enumerate(value))


def _check_unicode(text: str, path: tuple[str, ...], source: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        where = "/".join(path) or "(top level)"
        bad = text[e.start]
        raise ManifestError(
            f"{where}: string has a lone surrogate \\u{ord(bad):04x} at character {e.start} (not valid Unicode)", source
        ) from None


def _check_cache_key(b: Binding, source: str) -> None:
    assert b.cache_key is not None
    if not _CACHE_KEY.fullmatch(b.cache_key):
        raise ManifestError(
            f"bindings/{b.var}/cache_key: {b.cache_key!r} is not a Beam cache key var-version-producer_version-"
            f"pipeline_id ({CACHE_KEY_RULE}: keys become cache file names)",
            source,
        )


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ManifestError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _plainly_valid(doc: Any) -> bool:
    """True only for documents the schema accepts, in its plainest form:
    the known top-level fields, ``version`` 1, bindings to PCollection ids,
    ``computed`` a list of distinct names or ``"auto"``. Anything else (an
    object binding, a doubtful value) is for jsonschema to judge and explain;
    importing it costs a cold ``instrument`` more than its whole SDK-free work
    on a small pipeline."""
    if not isinstance(doc, dict) or not set(doc) <= {"version", "pipeline", "bindings", "computed"}:
        return False
    if "version" in doc and not (type(doc["version"]) is int and doc["version"] == 1):
        return False
    if "pipeline" in doc and not isinstance(doc["pipeline"], str):
        return False
    bindings = doc.get("bindings", {})
    if not isinstance(bindings, dict) or not all(
        1 <= len(var) <= 256 and isinstance(pc, str) and pc for var, pc in bindings.items()
    ):
        return False
    computed = doc.get("computed", [])
    if computed == "auto":
        return True
    return (
        isinstance(computed, list) and all(isinstance(v, str) and v for v in computed)
        and len(set(computed)) == len(computed)
    )


def _check_schema(doc: Any, source: str) -> None:
    if _plainly_valid(doc):
        return
    import jsonschema

    validator = jsonschema.Draft202012Validator(manifest_schema())
    errors = sorted(validator.iter_errors(doc), key=lambda e: (list(e.absolute_path), e.message))
    if not errors:
        return
    err = _intended_branch_error(errors[0])
    where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
    if err.validator == "additionalProperties" and not err.absolute_path:
        known = manifest_schema()["properties"]
        extra = sorted(set(doc) - set(known))
        raise ManifestError(f"unknown top-level field {extra[0]!r}{did_you_mean(extra[0], known)}", source)
    value = json.dumps(err.instance)
    if len(value) > 80:
        value = value[:77] + "..."
    raise ManifestError(f"{where}: {_detail(err)} (got {value})", source)


def _detail(err: Any) -> str:
    """What is wrong, without jsonschema's repr of the (possibly huge) value:
    the value itself follows, shortened, in "(got ...)"."""
    v = err.validator_value
    if err.validator == "oneOf" and list(err.absolute_path)[:1] == ["computed"]:
        names = err.instance
        if isinstance(names, list) and all(isinstance(n, str) and n for n in names):
            seen: set[str] = set()
            for n in names:  # one pass: a manifest may list millions
                if n in seen:
                    return f"{n!r} is listed twice"
                seen.add(n)
        return 'expected a list of bound variable names, or "auto"'
    if err.validator == "oneOf":
        return "expected a PCollection id string, {\"pcollection\": ...} or {\"producer\": ..., \"tag\": ...}"
    if err.validator == "pattern":
        return f"expected a Beam cache key var-version-producer_version-pipeline_id, {CACHE_KEY_RULE}"
    if err.validator == "type":
        return "expected " + " or ".join([v] if isinstance(v, str) else v)
    if err.validator == "const":
        return f"expected {json.dumps(v)}"
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = err.schema.get("properties", {})
        extra = sorted(set(err.instance) - set(known))
        if extra:
            return f"unknown field {extra[0]!r}{did_you_mean(extra[0], known)} (known: {', '.join(known)})"
    if err.validator == "uniqueItems":
        return "has duplicate items"
    if err.validator == "minLength":
        return "must not be empty" if v == 1 else f"must be at least {v} characters long"
    if err.validator == "maxLength":
        return f"must be at most {v} characters long"
    message = str(err.message)
    return message if len(message) <= 160 else message[:157] + "..."


def _intended_branch_error(err: Any) -> Any:
    """A oneOf failure on an object entry: report the first error of the one
    branch whose required keys it has (so a bad ``cache_key`` or an unexpected
    field is named), not the generic "none of the forms matched"."""
    if err.validator != "oneOf" or not isinstance(err.instance, dict):
        return err
    meant = [
        i
        for i, branch in enumerate(err.validator_value)
        if branch.get("type") == "object" and all(k in err.instance for k in branch.get("required", ()))
    ]
    if len(meant) != 1:
        return err
    inner = sorted(
        (e for e in err.context if e.relative_schema_path[0] == meant[0]),
        key=lambda e: (list(e.absolute_path), e.message),
    )
    return inner[0] if inner else err


def _unresolved_producer(b: Binding, index: GraphIndex, by_name: dict[tuple[str, str], str]) -> str:
    """Why ``b``'s producer and tag name no PCollection, and what would."""
    assert b.producer is not None
    tags = sorted(tag for name, tag in by_name if name == b.producer)
    if tags:
        return f"transform {b.producer!r} has no output tag {b.tag!r}{did_you_mean(b.tag, tags)} (its tags: {', '.join(tags)})"
    named = [t for t in index.transforms.values() if t.unique_name == b.producer]
    if named and named[0].subtransforms:
        # Beam keys a PCollection by the leaf that produces it; a composite
        # only passes its inner producers' outputs on.
        composite = named[0]
        if b.tag not in composite.outputs:
            outs = ", ".join(sorted(composite.outputs)) or "none"
            return f"{b.producer!r} is a composite with no output tag {b.tag!r} (its output tags: {outs})"
        pc = composite.outputs[b.tag]
        if pc not in index.producer:
            return f"{b.producer!r} is a composite whose output {b.tag!r} no transform produces; bind {{\"pcollection\": {json.dumps(pc)}}}"
        inner = index.transforms[index.producer[pc]]
        inner_tag = next(tag for tag, out in inner.outputs.items() if out == pc)
        spec = {"producer": inner.unique_name} if inner_tag == MAIN_TAG else {"producer": inner.unique_name, "tag": inner_tag}
        return (
            f"{b.producer!r} is a composite; its output {b.tag!r} is produced by {inner.unique_name!r}: "
            f"bind {json.dumps(spec)} (or {{\"pcollection\": {json.dumps(pc)}}})"
        )
    if named:
        return f"transform {b.producer!r} produces no PCollection"
    hint = did_you_mean(b.producer, {t.unique_name for t in index.transforms.values() if t.outputs})
    return f"no transform produces a PCollection under the unique name {b.producer!r}{hint}"


def resolve_bindings(manifest: Manifest, index: GraphIndex) -> Resolved:
    """Resolve every binding to a PCollection id of ``index``'s pipeline."""
    # Each producer's outputs once (per PCollection they were rescanned:
    # quadratic for a transform with many outputs); a PCollection under two
    # tags of its producer answers to both.
    by_name: dict[tuple[str, str], str] = {}
    producer = index.producer
    for tid in dict.fromkeys(producer.values()):
        t = index.transforms[tid]
        for tag, out in t.outputs.items():
            if producer.get(out) == tid:
                by_name[(t.unique_name, tag)] = out
    resolved = Resolved()
    owner: dict[str, str] = {}
    for b in manifest.bindings:
        if b.pcollection is not None:
            pc = b.pcollection
            if pc not in index.pcollections:
                if any(p == pc for p, _tag in by_name):  # a producer's name where an id belongs
                    hint = f"; {pc!r} is a transform's name: bind its output as {{\"producer\": {json.dumps(pc)}}}"
                else:
                    hint = did_you_mean(pc, index.pcollections)
                raise ManifestError(
                    f"bindings/{b.var}: PCollection {pc!r} does not exist in the pipeline{hint}", manifest.source
                )
        else:
            assert b.producer is not None
            pc = by_name.get((b.producer, b.tag))
            if pc is None:
                raise ManifestError(f"bindings/{b.var}: {_unresolved_producer(b, index, by_name)}", manifest.source)
        if pc in owner:
            # Beam keys cacheables by PCollection id; two names for one
            # PCollection would make the cache key ambiguous.
            raise ManifestError(
                f"bindings/{b.var}: PCollection {pc!r} is already bound to {owner[pc]!r}", manifest.source
            )
        owner[pc] = b.var
        resolved.by_var[b.var] = ResolvedBinding(b.var, pc, b.cache_key, b.var in manifest.computed)
    return resolved
