"""Codec round trips through real JSON text, property-based over dtypes, shapes and spaces."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dacstyle import codec, errors


def wire(value):
    """What the other side decodes: encode, JSON text, parse, decode."""
    return codec.decode(json.loads(json.dumps(codec.encode(value))))


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


DTYPES = st.one_of(
    hnp.boolean_dtypes(),
    hnp.integer_dtypes(endianness="="),
    hnp.integer_dtypes(endianness=">"),
    hnp.unsigned_integer_dtypes(),
    hnp.floating_dtypes(endianness="?"),
    hnp.complex_number_dtypes(),
    hnp.datetime64_dtypes(),
    hnp.byte_string_dtypes(),
    hnp.unicode_string_dtypes(),
)


@given(hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)))
def test_arrays_keep_dtype_shape_and_bits(array):
    back = wire(array)
    assert same_array(back, array)


@given(hnp.arrays(hnp.floating_dtypes(), hnp.array_shapes(min_dims=2, max_dims=3)))
def test_non_contiguous_arrays(array):
    view = array.T
    assert same_array(wire(view), np.ascontiguousarray(view))


def test_structured_dtype_and_nan_payload():
    structured = np.zeros(3, dtype=[("x", "<i4"), ("y", ">f8", (2,)), ("z", [("a", "u1")])])
    structured["x"] = [1, 2, 3]
    assert same_array(wire(structured), structured)
    weird_nan = np.array([0x7FF8DEADBEEF0001], dtype=np.uint64).view(np.float64)
    assert wire(weird_nan).tobytes() == weird_nan.tobytes()


@given(hnp.from_dtype(np.dtype("float32")) | hnp.from_dtype(np.dtype("int16")) | hnp.from_dtype(np.dtype("bool"))
       | hnp.from_dtype(np.dtype("complex128")) | hnp.from_dtype(np.dtype("uint64")))
def test_numpy_scalars(value):
    scalar = np.asarray(value)[()]
    back = wire(scalar)
    assert type(back) is type(scalar)
    assert np.asarray(back).tobytes() == np.asarray(scalar).tobytes()


PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=4)
    | st.tuples(children, children)
    | st.dictionaries(st.text(), children, max_size=4)
    | st.dictionaries(st.integers(), children, max_size=3),
    max_leaves=20,
)


@given(PLAIN)
def test_plain_values(value):
    assert wire(value) == value


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_special_floats(value):
    back = wire(value)
    assert (back != back) if value != value else back == value


def test_tag_like_keys_are_escaped():
    value = {"__nd__": [1, 2]}
    assert wire(value) == value
    assert wire({"__tuple__": "x", "other": 1}) == {"__tuple__": "x", "other": 1}


def test_int_enum_and_unsendable():
    import enum

    class Color(enum.IntEnum):
        RED = 3

    assert wire(Color.RED) == 3 and type(wire(Color.RED)) is int
    with pytest.raises(TypeError, match="cannot send"):
        codec.encode(object())
    with pytest.raises(TypeError, match="dtype object"):
        codec.encode(np.array([object()]))


LEAF_SPACES = st.one_of(
    st.builds(lambda n, s: spaces.Discrete(n, start=s), st.integers(1, 50), st.integers(-5, 5)),
    st.builds(lambda lo, w, shape: spaces.Box(lo, lo + w, shape=shape, dtype=np.float32),
              st.floats(-10, 10), st.floats(0.5, 5), hnp.array_shapes(min_dims=1, max_dims=3, max_side=4)),
    st.builds(lambda shape: spaces.Box(-np.inf, np.inf, shape=shape, dtype=np.float64),
              hnp.array_shapes(min_dims=1, max_dims=2, max_side=4)),
    st.builds(lambda: spaces.Box(0, 255, (2, 3), dtype=np.uint8)),
    st.builds(lambda nvec: spaces.MultiDiscrete(nvec), st.lists(st.integers(1, 9), min_size=1, max_size=4)),
    st.builds(lambda n: spaces.MultiBinary(n), st.integers(1, 6) | st.lists(st.integers(1, 3), min_size=2, max_size=2)),
    st.builds(lambda m, lo: spaces.Text(m, min_length=lo, charset="ab\ncd"), st.integers(2, 20), st.integers(0, 2)),
)
SPACES = st.recursive(
    LEAF_SPACES,
    lambda children: st.builds(spaces.Tuple, st.lists(children, min_size=1, max_size=3))
    | st.builds(spaces.Dict, st.dictionaries(st.text("abcxyz", min_size=1, max_size=4), children, min_size=1, max_size=3))
    | st.builds(lambda s, stack: spaces.Sequence(s, stack=stack), children, st.booleans())
    | st.builds(lambda xs: spaces.OneOf(xs), st.lists(LEAF_SPACES, min_size=1, max_size=3)),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None)
@given(SPACES, st.integers(0, 2**31 - 1))
def test_spaces_rebuild_as_real_spaces_and_samples_survive(space, seed):
    back = wire(space)
    assert type(back) is type(space)
    assert back == space
    space.seed(seed)
    sample = space.sample()
    assert back.contains(wire(sample))
    assert codec.encode(wire(sample)) == codec.encode(sample)


def test_graph_space_and_instance():
    space = spaces.Graph(node_space=spaces.Box(0, 1, (2,)), edge_space=spaces.Discrete(3))
    back = wire(space)
    assert back == space
    space.seed(1)
    sample = space.sample()
    again = wire(sample)
    assert isinstance(again, spaces.GraphInstance)
    assert same_array(again.nodes, sample.nodes) and same_array(again.edge_links, sample.edge_links)


def test_exceptions_come_back_as_their_type_with_traceback():
    try:
        raise KeyError("missing")
    except KeyError as exc:
        back = wire(exc)
    assert type(back) is KeyError and back.args == ("missing",)
    assert "raise KeyError" in back.remote_traceback
    project = wire(errors.BenchmarkError("bad spec"))
    assert type(project) is errors.BenchmarkError and str(project) == "bad spec"


def test_unknown_exception_type_becomes_remote_error_without_import():
    body = {"module": "some_module_never_imported", "name": "Boom", "args": ["x"], "message": "x", "traceback": "tb"}
    exc = codec.decode_exception(body)
    assert isinstance(exc, errors.RemoteError)
    assert exc.remote_type == "some_module_never_imported.Boom" and exc.remote_traceback == "tb"
    import sys

    assert "some_module_never_imported" not in sys.modules


def test_exception_attributes_travel_with_it():
    submission = wire(errors.SubmissionError("bad submission", errors=[{"code": "bad_path", "message": "no"}]))
    assert type(submission) is errors.SubmissionError and str(submission) == "bad submission"
    assert submission.errors == [{"code": "bad_path", "message": "no"}]
    died = wire(errors.ServerDiedError("the server died", "Traceback: boom"))
    assert type(died) is errors.ServerDiedError and died.stderr_tail == "Traceback: boom"
    assert str(died) == str(errors.ServerDiedError("the server died", "Traceback: boom"))
    unknown = wire(errors.RemoteError("x", remote_type="pkg.Boom", remote_traceback="tb"))
    assert unknown.remote_type == "pkg.Boom"


def test_only_allow_listed_exception_types_are_built():
    """An imported but unlisted type (subprocess.CalledProcessError) is a RemoteError unless the caller allows it."""
    import subprocess

    body = codec.encode_exception(subprocess.CalledProcessError(2, ["make"], stderr="oops"))
    refused = codec.decode_exception(json.loads(json.dumps(body)))
    assert type(refused) is errors.RemoteError and refused.remote_type == "subprocess.CalledProcessError"
    allowed = codec.decode_exception(json.loads(json.dumps(body)), allowed=(subprocess.CalledProcessError,))
    assert type(allowed) is subprocess.CalledProcessError and allowed.returncode == 2 and allowed.stderr == "oops"


def test_base_exceptions_that_stop_the_host_are_never_rebuilt():
    for exc in (SystemExit(3), KeyboardInterrupt(), GeneratorExit()):
        back = wire(exc)
        assert isinstance(back, errors.RemoteError) and back.remote_type == f"builtins.{type(exc).__name__}"


def test_decoding_never_imports_or_walks_modules():
    """numpy imports numpy.testing lazily on attribute access: a decoder that walks modules would import it."""
    import subprocess
    import sys

    script = (
        "import sys, json; import numpy; from dacstyle import codec, errors\n"
        "assert 'numpy.testing' not in sys.modules, 'imported before the test'\n"
        "body = {'module': 'numpy', 'name': 'testing.KnownFailureException', 'args': ['x'], 'message': 'x',"
        " 'traceback': None, 'attrs': {'__class__': 1, 'errors': 2}}\n"
        "exc = codec.decode_exception(body)\n"
        "assert type(exc) is errors.RemoteError, type(exc)\n"
        "assert 'numpy.testing' not in sys.modules, 'decoding imported numpy.testing'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr


def test_remote_attributes_cannot_reach_private_names():
    body = codec.encode_exception(ValueError("v"))
    body["attrs"] = {"__class__": "x", "_secret": 1, "__traceback__": None, "note": "kept"}
    back = codec.decode_exception(body)
    assert type(back) is ValueError and back.note == "kept" and not hasattr(back, "_secret")


def test_malformed_exception_bodies_become_remote_errors():
    for body in ({}, {"module": 5, "name": None}, {"module": "builtins", "name": "KeyError", "args": "notalist"}, []):
        assert isinstance(codec.decode_exception(body), BaseException)
