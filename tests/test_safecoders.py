"""Decoding untrusted cached elements: bounds-checked coders and a restricted
unpickler that refuses allocation bombs.

Beam's compiled coders read past their buffer on a crafted length (a segfault,
or process memory in the value); ``beaminst.model.safecoders`` decodes with Beam's
own pure-Python implementations over a strict stream, and must give exactly
what Beam's compiled coders give on bytes Beam wrote.
"""

from __future__ import annotations

import copyreg
import os
import pickle
import typing

import apache_beam as beam
import pytest
from apache_beam.coders import coders
from apache_beam.coders.row_coder import RowCoder
from apache_beam.testing.test_stream import WindowedValueHolder
from apache_beam.transforms.window import GlobalWindow, IntervalWindow
from apache_beam.typehints.schemas import (
    _hydrate_namedtuple_instance,
    named_tuple_from_schema,
    named_tuple_to_schema,
)
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming, WindowedValue

from beaminst.model.safecoders import DecodeError, bounded_decoder
from beaminst.model.safepickle import UntrustedPickleError, restricted_loads


class Point(typing.NamedTuple):
    x: int
    label: str


GLOBAL = coders.GlobalWindowCoder()
CASES = [
    (coders.FastPrimitivesCoder(), ["x", ("k", 3), {"a": [1, 2.5, None]}, b"bytes", beam.Row(a=1, b="s"), {1, 2},
                                    10**30, -5, True, [], (), {}, frozenset({"a"})]),
    (coders.TupleCoder([coders.StrUtf8Coder(), coders.VarIntCoder()]), [("é", 7), ("", -1)]),
    (coders.IterableCoder(coders.BytesCoder()), [[b"a", b""], []]),
    (RowCoder.from_type_hint(Point, None), [Point(1, "x")]),
    (coders.TupleCoder([coders.FloatCoder(), coders.BooleanCoder(), coders.TimestampCoder()]), [(1.5, True, Timestamp(3))]),
    (coders.NullableCoder(coders.StrUtf8Coder()), [None, "a"]),
    (coders.MapCoder(coders.StrUtf8Coder(), coders.VarIntCoder()), [{"a": 1}]),
    (coders.LengthPrefixCoder(coders.BytesCoder()), [b"abc"]),
    (coders.DeterministicFastPrimitivesCoder(coders.FastPrimitivesCoder(), "step"), [("k", 1)]),
]
PANES = [
    PaneInfo(True, True, PaneInfoTiming.UNKNOWN, 0, 0), PaneInfo(True, False, PaneInfoTiming.EARLY, 0, -1),
    PaneInfo(False, False, PaneInfoTiming.LATE, 3, 2), PaneInfo(False, True, PaneInfoTiming.ON_TIME, 2, 2),
]


@pytest.mark.parametrize("windows", ["global", "interval"])
def test_decodes_exactly_what_beams_compiled_coders_decode(windows):
    n = 0
    for value_coder, values in CASES:
        window_coder = GLOBAL if windows == "global" else coders.IntervalWindowCoder()
        coder = coders.WindowedValueCoder(value_coder, window_coder)
        decode = bounded_decoder(coder)
        wins = [GlobalWindow()] if windows == "global" else [IntervalWindow(0, 5), IntervalWindow(-3, 8)]
        for v in values:
            for pane in PANES:
                for ts in (0, -3, 10**6, Timestamp(micros=-2**62)):
                    encoded = coder.encode(WindowedValue(v, ts, wins, pane))
                    ours, beams = decode(encoded), coder.decode(encoded)
                    assert ours == beams and repr(ours.value) == repr(beams.value), (coder, v)
                    n += 1
    assert n > 150


def test_beams_coders_are_left_as_they_were():
    coder = coders.WindowedValueCoder(coders.FastPrimitivesCoder(), GLOBAL)
    before = type(coder.get_impl())
    bounded_decoder(coder)
    bounded_decoder(coder, trust_pickles=True)
    assert type(coder.get_impl()) is before
    assert type(coders.PickleCoder().get_impl()).__module__ == "apache_beam.coders.coder_impl"
    assert type(coders.FastPrimitivesCoder()._fallback_coder.get_impl()).__module__ == "apache_beam.coders.coder_impl"
    assert coder.decode(coder.encode(WindowedValue(("k", 1), 0, [GlobalWindow()]))).value == ("k", 1)


# Global-window WindowedValues: timestamp, one window, pane byte, then the value.
_WV = b"\x00" * 8 + b"\x00\x00\x00\x01\x0f"


@pytest.mark.parametrize("data, message", [
    (_WV + b"\x06\x01\x03\xff\xff\xff\x07", "a read of 16777215 bytes"),  # Beam's decoder reads past the buffer (or segfaults)
    (_WV + b"\x06\x01\x03\x80\x08", "a read of 1024 bytes at offset 18 of 18"),  # Beam's returns process memory
    (b"", "a read of 8 bytes at offset 0 of 0"),
    (b"\x00" * 8 + b"\x7f\xff\xff\xff\x0f\x01", "more calls than its length allows"),  # 2**31 global windows
    (_WV + b"\x05\xff\xff\xff\x7f" + b"\x00" * 40, "a read of 1 bytes"),  # a list that claims 2**28 items
])
def test_crafted_bytes_are_refused_not_read_past(data, message):
    decode = bounded_decoder(coders.WindowedValueCoder(coders.FastPrimitivesCoder(), GLOBAL))
    with pytest.raises(DecodeError, match=message):
        decode(data)


def test_the_pickle_fallback_is_restricted_unless_trusted(tmp_path):
    marker = tmp_path / "MARKER"

    class Touch:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    coder = coders.WindowedValueCoder(coders.FastPrimitivesCoder(), GLOBAL)
    encoded = coder.encode(WindowedValue(Touch(), 0, [GlobalWindow()]))
    with pytest.raises(UntrustedPickleError, match="io.open"):
        bounded_decoder(coder)(encoded)
    assert not marker.exists()
    bounded_decoder(coder, trust_pickles=True)(encoded)
    assert marker.exists()


class _Reduce:
    def __init__(self, make, args):
        self.make, self.args = make, args

    def __reduce__(self):
        return (self.make, self.args)


class _Build:
    """Pickles as an empty instance of ``obj``'s class, then BUILD with ``state``."""

    def __init__(self, obj, state):
        self.obj, self.state = obj, state

    def __reduce__(self):
        return (copyreg._reconstructor, (type(self.obj), object, None), self.state)


BIG = 10**12


@pytest.mark.parametrize("bomb", [
    pickle.dumps(_Reduce(bytes, (BIG,)), 4),
    pickle.dumps(_Reduce(bytearray, (BIG,)), 4),
    pickle.dumps(_Reduce(list, (range(BIG),)), 4),
    pickle.dumps(_Reduce(tuple, (range(BIG),)), 4),
    pickle.dumps(_Reduce(frozenset, (range(BIG),)), 4),
    pickle.dumps(_Reduce(copyreg._reconstructor, (bytes, bytes, BIG)), 4),
    # NEWOBJ: bytes.__new__(bytes, BIG), written by hand
    b"\x80\x04\x8c\x08builtins\x8c\x05bytes\x93\x8a\x06\x00\x10\xa5\xd4\xe8\x00\x85\x81.",
    # OBJ and INST (protocols 0-1) call the class with no REDUCE: bytes(BIG), by hand
    b"(cbuiltins\nbytes\nI1000000000000\no.",
    b"(I1000000000000\nibuiltins\nbytes\n.",
], ids=["bytes", "bytearray", "list-range", "tuple-range", "frozenset-range", "reconstructor", "newobj", "obj", "inst"])
def test_a_few_bytes_of_pickle_cannot_allocate_gigabytes(bomb):
    with pytest.raises(UntrustedPickleError, match="allocates what the file asks for"):
        restricted_loads(bomb)


def test_beams_own_values_still_load():
    values = [b"abc", bytearray(b"xy"), [1, 2], (1,), {1}, frozenset({2}), {"a": 1}, "s", range(3), beam.Row(a=1),
              WindowedValueHolder(WindowedValue(("k", 1), 5, [IntervalWindow(0, 10)])), Timestamp(5)]
    for v in values:
        for protocol in (3, 4, 5):
            out = restricted_loads(pickle.dumps(v, protocol))
            assert out == v or repr(out) == repr(v), (v, out)


def test_beams_schema_rows_sharded_keys_and_file_metadata_load():
    # What a runner hands the cache write for schema'd PCollections (RowCoder
    # decodes to a named tuple built from the schema; GroupBy(...).aggregate_field
    # builds its own with core._dynamic_named_tuple), for
    # GroupIntoBatches.WithShardedKey and for fileio.MatchFiles: Beam's own
    # rebuilds of plain data.
    from apache_beam.io.filesystem import FileMetadata
    from apache_beam.transforms.core import _dynamic_named_tuple
    from apache_beam.typehints.schemas import named_fields_to_schema, named_tuple_from_schema
    from apache_beam.utils.sharded_key import ShardedKey

    schema_row = named_tuple_from_schema(named_fields_to_schema([("k", str), ("v", int)]))("a", 1)
    values = [schema_row, _dynamic_named_tuple("Result", ("name", "total"))("a", 3), ShardedKey("k", b"\x01"),
              FileMetadata("/data/f1.txt", 6, 1.5)]
    for v in values:
        for protocol in (3, 4, 5):
            out = restricted_loads(pickle.dumps(v, protocol))
            assert out == v and type(out).__name__ == type(v).__name__, (v, out)
            assert getattr(out, "_fields", None) == getattr(v, "_fields", None)


def _readable_file(**attrs):
    """A ReadableFile whose attributes are exactly ``attrs``, as a pickle
    would BUILD it."""
    from apache_beam.io.fileio import ReadableFile

    f = ReadableFile.__new__(ReadableFile)
    f.__dict__.update(attrs)
    return f


def test_readmatches_readable_files_load():
    # fileio.ReadMatches' outputs: no reduce of their own, so the runner's
    # pickle is __newobj__(ReadableFile) + BUILD {metadata: FileMetadata, _compression}.
    from apache_beam.io.fileio import ReadableFile
    from apache_beam.io.filesystem import FileMetadata

    for compression in (None, "gzip"):
        f = ReadableFile(FileMetadata("/data/f1.txt", 6, 1.5), compression)
        for protocol in (2, 3, 4, 5):
            data = pickle.dumps(f, protocol)
            assert b"ReadableFile" in data and b"_reconstructor" not in data
            out = restricted_loads(data)
            assert type(out) is ReadableFile and out._compression == compression
            assert type(out.metadata) is FileMetadata and out.metadata == f.metadata


@pytest.mark.parametrize("bad, match", [
    (lambda fm: _readable_file(metadata=coders.VarIntCoder(), _compression=None), "'metadata' set to a apache_beam.coders"),
    (lambda fm: _readable_file(metadata="/data/f1.txt", _compression=None), "'metadata' set to a builtins.str"),
    (lambda fm: _readable_file(metadata=fm, _compression=None, mode="rb"), "attributes"),
    (lambda fm: _readable_file(metadata=fm), "attributes"),
    (lambda fm: _readable_file(metadata=fm, _compression=[1]), "'_compression' set to a builtins.list"),
    (lambda fm: _Reduce(__import__("apache_beam.io.fileio").io.fileio.ReadableFile, (coders.VarIntCoder(),)),
     "'metadata' set to a"),
    (lambda fm: _Reduce(copyreg._reconstructor, (__import__("apache_beam.io.fileio").io.fileio.ReadableFile,
                                                 __import__("apache_beam.io.fileio").io.fileio.ReadableFile, 3)),
     "'metadata' set to a builtins.int"),
], ids=["metadata-a-coder", "metadata-a-str", "extra-attribute", "missing-attribute", "compression-a-list",
        "called-with-a-coder", "reconstructor-init"])
def test_a_readable_file_holds_only_what_beams_does(bad, match):
    # The class is admitted for elements, but BUILD (or its __init__) would set
    # any attribute to anything else the policy admits.
    from apache_beam.io.filesystem import FileMetadata

    for protocol in (3, 4, 5):  # 2 names copyreg by its Python 2 name, refused as such
        with pytest.raises(UntrustedPickleError, match=match):
            restricted_loads(pickle.dumps(bad(FileMetadata("/data/f1.txt", 6)), protocol))


def test_a_readable_file_still_loads_its_state_restricted():
    with pytest.raises(UntrustedPickleError, match="posix.system"):
        restricted_loads(pickle.dumps(_readable_file(metadata=os.system, _compression=None), 4))
    with pytest.raises(UntrustedPickleError, match="posix.system"):
        restricted_loads(pickle.dumps(_readable_file(metadata=_Reduce(os.system, ("true",)), _compression=None), 4))


def test_file_metadata_holds_only_what_beams_does():
    from apache_beam.io.filesystem import FileMetadata

    for attrs, match in [({"path": 3, "size_in_bytes": 1, "last_updated_in_seconds": 0.0}, "'path' set to a builtins.int"),
                         ({"path": "/a", "size_in_bytes": 1, "last_updated_in_seconds": 0.0, "x": [1]}, "attributes")]:
        fm = FileMetadata.__new__(FileMetadata)
        fm.__dict__.update(attrs)
        with pytest.raises(UntrustedPickleError, match=match):
            restricted_loads(pickle.dumps(fm, 4))


def test_the_same_path_builds_nothing_else():
    # __newobj__ + BUILD of another class of fileio's, or a slot state that
    # turns an admitted instance into a ReadableFile, is still refused.
    from apache_beam.io.fileio import MatchAll, ReadableFile
    from apache_beam.io.filesystem import FileMetadata

    other = _Build(MatchAll(), {"metadata": FileMetadata("/a", 1), "_compression": None})
    with pytest.raises(UntrustedPickleError, match="naming apache_beam.io.fileio.MatchAll"):
        restricted_loads(pickle.dumps(other, 4))
    turned = _Build(FileMetadata("/a", 1), (None, {"__class__": ReadableFile}))
    with pytest.raises(UntrustedPickleError, match="class changed to apache_beam.io.fileio.ReadableFile"):
        restricted_loads(pickle.dumps(turned, 4))


def test_beams_schema_rows_load():
    # A schema'd PCollection (to_pcollection of a deferred DataFrame, a Beam
    # SQL or cross-language output) holds NamedTuples Beam generates from the
    # schema; they pickle through Beam's own _hydrate_namedtuple_instance.
    from apache_beam.portability.api import schema_pb2

    schema = schema_pb2.Schema()
    schema.CopyFrom(named_tuple_to_schema(Point))
    schema.id = "beaminst-test-schema-row"
    row = named_tuple_from_schema(schema)(3, "y")
    for protocol in (3, 4, 5):
        data = pickle.dumps(row, protocol)
        assert b"_hydrate_namedtuple_instance" in data
        out = restricted_loads(data)
        assert tuple(out) == (3, "y") and out._fields == ("x", "label")


def test_a_schema_row_still_loads_its_values_restricted():
    schema = named_tuple_to_schema(Point).SerializeToString()
    with pytest.raises(UntrustedPickleError, match="posix.system"):
        restricted_loads(pickle.dumps(_Reduce(_hydrate_namedtuple_instance, (schema, (_Reduce(os.system, ("true",)), "y"))), 4))


@pytest.mark.parametrize("bad", [
    _Reduce(_hydrate_namedtuple_instance, (b"\xffnot a schema", (1,))),
    _Reduce(beam.pvalue._make_Row, (1, 2)),
], ids=["schema-row-garbage-schema", "row-wrong-arguments"])
def test_a_beam_value_that_does_not_build_is_bad_input_not_a_crash(bad):
    with pytest.raises(UntrustedPickleError, match="does not build"):
        restricted_loads(pickle.dumps(bad, 4))


def _G(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _U(s):
    b = s.encode()
    return b"X" + len(b).to_bytes(4, "little") + b


_FM = _G("apache_beam.io.filesystem", "FileMetadata")


def _set_on(target, attr, value):
    """BUILD with slot state {attr: value} onto ``target`` (pickle bytes), then POP."""
    return target + b"N}" + _U(attr) + value + b"s\x86b0"


def test_a_pickle_cannot_rename_or_change_an_admitted_class():
    # BUILD onto the class object is a setattr on the class: renaming it hid
    # the FileMetadata built meanwhile from the state check (by name), and
    # replacing a method changed it for the rest of the process.
    from apache_beam.io.filesystem import FileMetadata

    repr_before = FileMetadata.__repr__
    bad_state = b"}(" + _U("path") + b"K\x07" + _U("evil") + b"K\x01u"
    inst = _G("copyreg", "_reconstructor") + b"(" + _FM + _G("builtins", "object") + b"NtR"
    spoof = (b"\x80\x02" + _set_on(_FM, "__qualname__", _U("X")) + inst + bad_state + b"b"
             + _set_on(_FM, "__qualname__", _U("FileMetadata")) + b".")
    pollute = b"\x80\x02" + _set_on(_FM, "__repr__", _G("builtins", "object")) + _U("x") + b"."
    coder = b"\x80\x02" + _set_on(_G("apache_beam.coders.coders", "VarIntCoder"), "encode", _G("builtins", "object")) + b"N."
    for data in (spoof, pollute, coder):
        with pytest.raises(UntrustedPickleError, match="new state for the class"):
            restricted_loads(data)
    assert FileMetadata.__qualname__ == "FileMetadata" and FileMetadata.__repr__ is repr_before
    assert coders.VarIntCoder.encode is not object
    # a global that is not a class (typing's aliases forward attributes to their origin)
    with pytest.raises(UntrustedPickleError, match="new state for a global"):
        restricted_loads(b"\x80\x02" + _set_on(_G("typing", "Callable"), "register", _G("builtins", "object")) + b"N.")


@pytest.mark.parametrize("state", [(None, {"__dict__": {}}), {"__weakref__": 1}, (None, {"__qualname__": "x"})])
def test_a_state_setting_a_dunder_is_refused(state):
    from apache_beam.io.filesystem import FileMetadata

    with pytest.raises(UntrustedPickleError, match="with a state setting __"):
        restricted_loads(pickle.dumps(_Build(FileMetadata("/a", 1), state), 4))


def test_the_state_check_compares_classes_not_names():
    # A class of the same module and qualname (here: renamed to look like
    # FileMetadata) is not FileMetadata: an attribute of that class is refused.
    from apache_beam.io.fileio import ReadableFile

    class Fake:
        pass

    Fake.__module__, Fake.__qualname__ = "apache_beam.io.filesystem", "FileMetadata"
    f = _readable_file(metadata=Fake(), _compression=None)
    from beaminst.model import safepickle

    problem = safepickle._state_problem(f, ReadableFile)
    assert problem == "'metadata' set to a apache_beam.io.filesystem.FileMetadata"


_RANGE = _G("builtins", "range") + b"(I%d\ntR" % BIG  # range(10**12): a few bytes, lazy


@pytest.mark.parametrize("data, match", [
    # REDUCE, NEWOBJ, NEWOBJ_EX whose arguments are a range: the Python unpickler expanded it into a tuple
    (b"\x80\x02" + _G("builtins", "slice") + _RANGE + b"R.", "slice with arguments that are a range, not a tuple"),
    (b"\x80\x02" + _G("builtins", "object") + _RANGE + b"\x81.", "with arguments that are a range, not a tuple"),
    (b"\x80\x04" + _G("builtins", "object") + _RANGE + b"}\x92.", "with arguments that are a range, not a tuple"),
    (b"\x80\x04" + _G("builtins", "object") + b")" + _RANGE + b"\x92.", "keyword arguments that are a range, not a dict"),
    # NEWOBJ_EX keyword arguments were never checked: bytes.__new__(bytes, source=10**12)
    (b"\x80\x04" + _G("builtins", "bytes") + b")}" + _U("source") + b"\x8a\x06\x00\x10\xa5\xd4\xe8\x00s\x92.",
     r"bytes\(int\), which allocates"),
    # Beam's reconstructors expand their values with *: a range, or a lazy iterable of its own
    (b"\x80\x02" + _G("apache_beam.transforms.core", "_unpickle_dynamic_named_tuple") + b"(" + _U("T") + _U("a")
     + b"\x85" + _RANGE + b"tR.", r"_unpickle_dynamic_named_tuple\(range\), which allocates"),
    (b"\x80\x02" + _G("apache_beam.coders.coders", "TupleCoder") + b"(" + _RANGE + b"tR.", r"TupleCoder\(range\)"),
    (b"\x80\x02" + _G("apache_beam.pvalue", "_make_Row") + b"((" + _U("a") + _RANGE + b"ltR.", r"does not build \(_make_Row: argument 0 is a list, not a tuple\)"),
], ids=["reduce", "newobj", "newobj-ex-args", "newobj-ex-kwargs", "newobj-ex-bytes", "dynamic-named-tuple",
        "a-coder", "row-items"])
def test_call_arguments_are_a_tuple_and_never_a_range(data, match):
    with pytest.raises(UntrustedPickleError, match=match):
        restricted_loads(data)


def _nested_rows(depth, leaf, wrap=None):
    """A one-field schema whose field nests ``depth`` one-field row types (each
    inside ``wrap``'s wrapper when given) around ``leaf``."""
    from apache_beam.portability.api import schema_pb2

    ft = leaf
    for i in range(depth):
        ft = schema_pb2.FieldType(row_type=schema_pb2.RowType(schema=schema_pb2.Schema(
            id=f"beaminst-test-deep-{depth}-{i}-{wrap}", fields=[schema_pb2.Field(name="x", type=ft)])))
        if wrap == "array":
            ft = schema_pb2.FieldType(array_type=schema_pb2.ArrayType(element_type=ft))
        elif wrap == "map":
            ft = schema_pb2.FieldType(map_type=schema_pb2.MapType(key_type=leaf, value_type=ft))
    return schema_pb2.Schema(id=f"beaminst-test-deep-{depth}-{wrap}", fields=[schema_pb2.Field(name="x", type=ft)])


def test_a_schema_row_with_a_schema_beam_takes_too_long_to_build_is_refused():
    # Beam's named_tuple_from_schema takes exponentially longer per level of
    # nested row types: 12 levels (~290 bytes) take seconds, 16 hours. The
    # refusal comes before Beam sees the schema, so this is fast at any depth.
    from apache_beam.portability.api import schema_pb2

    leaf = schema_pb2.FieldType(atomic_type=schema_pb2.INT64)
    for wrap in (None, "array", "map"):
        data = pickle.dumps(_Reduce(_hydrate_namedtuple_instance, (_nested_rows(12, leaf, wrap).SerializeToString(), (1,))), 4)
        with pytest.raises(UntrustedPickleError, match="row types nested more than 8 deep"):
            restricted_loads(data)
    wide = schema_pb2.Schema(id="beaminst-test-wide", fields=[schema_pb2.Field(name=f"f{i}", type=leaf) for i in range(10_001)])
    with pytest.raises(UntrustedPickleError, match="more than 10000 fields"):
        restricted_loads(pickle.dumps(_Reduce(_hydrate_namedtuple_instance, (wide.SerializeToString(), (1,) * 10_001)), 4))
    # a schema nested as deep as allowed still loads
    out = restricted_loads(pickle.dumps(_Reduce(_hydrate_namedtuple_instance, (_nested_rows(7, leaf).SerializeToString(), (1,))), 4))
    assert out._fields == ("x",)


def test_a_schema_row_cannot_take_the_id_of_another_schema():
    # Beam returns the type registered under a schema id whatever fields the
    # pickle's schema has: values of one schema as another's type.
    schema = named_tuple_to_schema(Point)  # registers Point under its id
    other = type(schema)()
    other.CopyFrom(schema)
    del other.fields[1:]
    data = pickle.dumps(_Reduce(_hydrate_namedtuple_instance, (other.SerializeToString(), (b"not an int",))), 4)
    with pytest.raises(UntrustedPickleError, match="of another registered schema"):
        restricted_loads(data)
    assert restricted_loads(pickle.dumps(_Reduce(_hydrate_namedtuple_instance, (schema.SerializeToString(), (1, "a"))), 4)) == (1, "a")
