"""The one codec between host and server: Python values <-> plain JSON trees.

:func:`encode` turns a value into dicts, lists, strings, numbers, booleans and
None that Pyro5's JSON serializer writes once; :func:`decode` rebuilds the value.
Nothing is pickled, and decoding imports nothing but ConfigSpace (see below).
Tagged forms (a dict with one ``"__tag__"`` key):

=============  ==================================================================
``__nd__``     numpy array: ``[descr, shape, base64 bytes]`` (dtype and bits exact)
``__shm__``    numpy array in the server's shared area (:mod:`dacstyle.sharedarrays`, one node):
               ``[file name, descr, shape, size]``, validated before it is read
``__np__``     numpy scalar: ``[descr, base64 bytes]``
``__tuple__``  tuple (named tuples other than GraphInstance become tuples)
``__bytes__``  bytes, base64
``__map__``    dict with non-string keys, or a key that looks like a tag
``__space__``  a gymnasium space, rebuilt as the real space class
``__graph__``  a gymnasium GraphInstance
``__exc__``    an exception: type name, args, message, attributes, remote traceback
``__cs__``     a ConfigSpace ``ConfigurationSpace``: ``{"json": its own serialised
               dict, "meta": the space's meta, which that leaves out}``
``__config__`` a ConfigSpace ``Configuration``: ``{"space": __cs__ body, "values": ...}``
=============  ==================================================================

ConfigSpace values travel only when ConfigSpace is installed on the sending side
(it is, if such a value exists); the receiving side imports it, and nothing else,
to rebuild them, or raises an error naming the install command.
"""

from __future__ import annotations

import binascii
import builtins
import math
import json
import sys
import traceback
from typing import Any, Callable, Iterable

import numpy as np
from gymnasium import spaces

from . import errors
from .sharedarrays import THRESHOLD, current_area

__all__ = ["encode", "decode", "encode_exception", "decode_exception"]

_TAGS = frozenset({"__nd__", "__shm__", "__np__", "__tuple__", "__bytes__", "__map__", "__space__", "__graph__", "__exc__",
                   "__cs__", "__config__"})


_PLAIN = frozenset({type(None), bool, int, float, str})
"""Exact types that are their own JSON form (subclasses such as IntEnum travel as their base)."""


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _unb64(text: str) -> bytes:
    return binascii.a2b_base64(text, strict_mode=True)  # what base64.b64decode(validate=True) runs


_DESCRS: dict[np.dtype, str] = {}
_DTYPES: dict[str, np.dtype] = {}
"""Plain dtypes and their descr, both ways: computing one takes microseconds, a step needs several."""


def _dtype_descr(dtype: np.dtype) -> Any:
    descr = _DESCRS.get(dtype)
    if descr is None:
        descr = np.lib.format.dtype_to_descr(dtype)
        if isinstance(descr, str) and dtype.metadata is None:
            _remember(_DESCRS, dtype, descr)
    return descr


def _dtype_from(descr: Any) -> np.dtype:
    if type(descr) is str:
        dtype = _DTYPES.get(descr)
        if dtype is None:
            dtype = np.lib.format.descr_to_dtype(descr)
            _remember(_DTYPES, descr, dtype)
        return dtype
    if isinstance(descr, list):  # structured dtype: JSON turned its tuples into lists
        descr = [tuple(_dtype_from_field(f)) for f in descr]
    return np.lib.format.descr_to_dtype(descr)


def _remember(cache: dict, key: Any, value: Any) -> None:
    if len(cache) >= 64:  # descrs come from the peer: bounded
        cache.clear()
    cache[key] = value


def _dtype_from_field(field: list) -> list:
    name, sub, *shape = field
    if isinstance(sub, list):
        sub = [tuple(_dtype_from_field(f)) for f in sub]
    return [name, sub, *(tuple(s) for s in shape)]


# -- encoding -------------------------------------------------------------------------
def encode(value: Any) -> Any:
    """Turn ``value`` into a JSON tree; raises TypeError for what cannot travel."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    exact = _ENCODERS.get(kind)  # the common shapes, by exact type: one dict lookup
    return exact(value) if exact is not None else _encode_other(value)


def _encode_items(values: Iterable[Any]) -> list[Any]:
    return [v if type(v) in _PLAIN else encode(v) for v in values]


def _encode_dict(value: dict) -> dict[str, Any]:
    out = {}
    for key, item in value.items():
        if type(key) is not str:
            return _encode_map(value)
        out[key] = item if type(item) in _PLAIN else encode(item)
    if len(out) == 1 and key in _TAGS:
        return _encode_map(value)
    return out


def _encode_map(value: dict) -> dict[str, Any]:
    return {"__map__": [[encode(k), encode(v)] for k, v in value.items()]}


def _encode_array(value: np.ndarray) -> dict[str, Any]:
    if value.dtype.hasobject:
        raise TypeError("numpy arrays of dtype object cannot be sent; convert them to lists")
    if THRESHOLD <= value.nbytes and (area := current_area()) is not None and value.nbytes <= area.max_bytes:
        if (name := area.put(value)) is not None:
            return {"__shm__": [name, _dtype_descr(value.dtype), list(value.shape), value.nbytes]}
    return {"__nd__": [_dtype_descr(value.dtype), list(value.shape), _b64(value.tobytes())]}  # C order


def _encode_scalar(value: np.generic) -> dict[str, Any]:
    if isinstance(value, np.object_):
        raise TypeError("numpy object scalars cannot be sent")
    return {"__np__": [_dtype_descr(value.dtype), _b64(value.tobytes())]}


_ENCODERS: dict[type, Callable[[Any], Any]] = {
    list: _encode_items,
    dict: _encode_dict,
    tuple: lambda value: {"__tuple__": _encode_items(value)},
    np.ndarray: _encode_array,
}
"""Encoders by exact type; numpy scalar types join on first use. Subclasses take :func:`_encode_other`."""


def _encode_other(value: Any) -> Any:
    """Everything but the exact common types: subclasses, bytes, spaces, exceptions, ConfigSpace values."""
    if isinstance(value, np.ndarray):
        return _encode_array(value)
    if isinstance(value, np.generic):
        if not isinstance(value, np.object_):
            _ENCODERS[type(value)] = _encode_scalar
        return _encode_scalar(value)
    if isinstance(value, dict):
        return _encode_dict(value)
    if isinstance(value, list):
        return _encode_items(value)
    if isinstance(value, spaces.GraphInstance):
        return {"__graph__": [encode(value.nodes), encode(value.edges), encode(value.edge_links)]}
    if isinstance(value, tuple):
        return {"__tuple__": _encode_items(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"__bytes__": _b64(bytes(value))}
    for base in (int, float, str):  # subclasses such as IntEnum travel as their base
        if isinstance(value, base):
            return base(value)
    if isinstance(value, spaces.Space):
        return {"__space__": _encode_space(value)}
    if isinstance(value, BaseException):
        return {"__exc__": encode_exception(value)}
    if sys.modules.get("ConfigSpace") is not None and (tagged := _encode_configspace(value)) is not None:
        return tagged
    raise TypeError(f"cannot send a value of type {type(value).__module__}.{type(value).__qualname__}")


def _encode_space(space: spaces.Space) -> dict[str, Any]:
    kind = type(space).__name__
    if isinstance(space, spaces.Box):
        return {"type": "Box", "low": encode(space.low), "high": encode(space.high), "dtype": _dtype_descr(space.dtype)}
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start), "dtype": _dtype_descr(space.dtype)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": encode(space.nvec), "start": encode(space.start),
                "dtype": _dtype_descr(space.dtype)}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": encode(space.n)}
    if isinstance(space, spaces.Text):
        return {"type": "Text", "max_length": space.max_length, "min_length": space.min_length,
                "charset": space.characters}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "spaces": [_encode_space(s) for s in space.spaces]}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": [[k, _encode_space(s)] for k, s in space.spaces.items()]}
    if isinstance(space, spaces.Sequence):
        return {"type": "Sequence", "space": _encode_space(space.feature_space), "stack": space.stack}
    if isinstance(space, spaces.Graph):
        edge = None if space.edge_space is None else _encode_space(space.edge_space)
        return {"type": "Graph", "node_space": _encode_space(space.node_space), "edge_space": edge}
    if isinstance(space, spaces.OneOf):
        return {"type": "OneOf", "spaces": [_encode_space(s) for s in space.spaces]}
    raise TypeError(f"cannot send a gymnasium space of type {kind}")


def _encode_configspace(value: Any) -> dict[str, Any] | None:
    """A ConfigurationSpace or Configuration as a tagged tree; None for anything else."""
    import ConfigSpace  # already imported: the caller checked sys.modules

    if isinstance(value, ConfigSpace.ConfigurationSpace):
        return {"__cs__": _space_body(value)}
    if isinstance(value, ConfigSpace.Configuration):
        values = {k: v.item() if isinstance(v, np.generic) else v for k, v in value.items()}
        return {"__config__": {"space": _space_body(value.config_space), "values": encode(values)}}
    return None


def _space_body(space: Any) -> dict[str, Any]:
    return {"json": encode(space.to_serialized_dict()), "meta": encode(space.meta)}


def encode_exception(exc: BaseException) -> dict[str, Any]:
    """An exception as data: its type's qualified name, args, message, traceback and attributes.

    Public instance attributes (``SubmissionError.errors``, ``stderr_tail``) travel
    in ``attrs``; one the codec cannot send is left out.
    """
    cls = type(exc)
    tb = getattr(exc, "remote_traceback", None) or "".join(traceback.format_exception(cls, exc, exc.__traceback__))
    try:
        args = encode(list(exc.args))
    except TypeError:
        args = [str(a) for a in exc.args]
    attrs = {}
    for key, value in vars(exc).items():
        if not key.startswith("_") and key != "remote_traceback":
            try:
                attrs[key] = encode(value)
            except TypeError:
                pass
    return {"module": cls.__module__, "name": cls.__qualname__, "args": args, "message": str(exc), "traceback": tb,
            "attrs": attrs}


# -- decoding -------------------------------------------------------------------------
def decode(tree: Any) -> Any:
    """Rebuild the value :func:`encode` turned into ``tree``."""
    kind = type(tree)
    if kind is list:
        return [v if type(v) in _PLAIN else decode(v) for v in tree]
    if kind is dict:
        if len(tree) == 1:
            for tag, body in tree.items():
                handler = _DECODERS.get(tag)
                if handler is not None:
                    return handler(body)
        return {k: v if type(v) in _PLAIN else decode(v) for k, v in tree.items()}
    if kind in _PLAIN:
        return tree
    if isinstance(tree, dict):  # not from JSON: a subclass, decoded as a dict
        return decode(dict(tree))
    if isinstance(tree, list):
        return [decode(v) for v in tree]
    return tree


def _decode_nd(body: list) -> np.ndarray:
    descr, shape, data = body
    array = np.frombuffer(bytearray(_unb64(data)), dtype=_dtype_from(descr))  # writable, one numpy call
    if len(shape) != 1 or shape[0] != len(array):  # a 1-d array needs no reshape; a wrong shape is refused there
        array = array.reshape(tuple(shape))
    return array


def _decode_shm(body: list) -> np.ndarray:
    area = current_area()
    if area is None:
        raise ValueError("a shared-memory array reference arrived where no shared area is in use")
    name, descr, shape, size = body
    dtype = _dtype_from(descr)
    if dtype.hasobject or not all(type(n) is int and n >= 0 for n in shape) or type(size) is not int:
        raise ValueError("a shared-memory array reference with a bad dtype, shape or size")
    if math.prod(shape) * dtype.itemsize != size:
        raise ValueError(f"a shared-memory array reference whose size {size} is not its dtype times its shape")
    return np.frombuffer(area.take(name, size), dtype=dtype).reshape(tuple(shape))


def _decode_np(body: list) -> np.generic:
    descr, data = body
    return np.frombuffer(_unb64(data), dtype=_dtype_from(descr))[0]


def _decode_space(body: dict[str, Any]) -> spaces.Space:
    kind = body["type"]
    if kind == "Box":
        return spaces.Box(low=decode(body["low"]), high=decode(body["high"]), dtype=_dtype_from(body["dtype"]))
    if kind == "Discrete":
        return spaces.Discrete(body["n"], start=body["start"], dtype=_dtype_from(body["dtype"]))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(decode(body["nvec"]), dtype=_dtype_from(body["dtype"]), start=decode(body["start"]))
    if kind == "MultiBinary":
        return spaces.MultiBinary(decode(body["n"]))
    if kind == "Text":
        return spaces.Text(body["max_length"], min_length=body["min_length"], charset=body["charset"])
    if kind == "Tuple":
        return spaces.Tuple([_decode_space(s) for s in body["spaces"]])
    if kind == "Dict":
        return spaces.Dict({k: _decode_space(s) for k, s in body["spaces"]})
    if kind == "Sequence":
        return spaces.Sequence(_decode_space(body["space"]), stack=body["stack"])
    if kind == "Graph":
        edge = None if body["edge_space"] is None else _decode_space(body["edge_space"])
        return spaces.Graph(_decode_space(body["node_space"]), edge)
    if kind == "OneOf":
        return spaces.OneOf([_decode_space(s) for s in body["spaces"]])
    raise TypeError(f"unknown gymnasium space type {kind!r}")


def _configspace() -> Any:
    """The ConfigSpace module, or an error naming the command that installs it."""
    try:
        import ConfigSpace
    except ImportError as exc:
        raise errors.MissingDependencyError(
            'a ConfigSpace value arrived but ConfigSpace is not installed here: pip install "dacstyle[hpo]"'
        ) from exc
    return ConfigSpace


def _decode_space_json(body: dict[str, Any]) -> Any:
    space = _configspace().ConfigurationSpace.from_serialized_dict(decode(body["json"]))
    space.meta = decode(body["meta"])
    return space


_CONFIG_SPACES: dict[str, Any] = {}
"""Spaces rebuilt for Configurations, by their body's JSON text (rebuilding one takes milliseconds)."""


def _decode_configuration(body: dict[str, Any]) -> Any:
    configuration = _configspace().Configuration
    key = json.dumps(body["space"], sort_keys=True)
    space = _CONFIG_SPACES.get(key)
    if space is None or json.dumps(_space_body(space), sort_keys=True) != key:  # new, or changed since
        space = _decode_space_json(body["space"])
        if len(_CONFIG_SPACES) >= 16:
            _CONFIG_SPACES.clear()
        _CONFIG_SPACES[key] = space
    return configuration(space, values=decode(body["values"]))


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _exception_types(candidates: Any) -> dict[str, type]:
    return {_qualified(t): t for t in candidates if isinstance(t, type) and issubclass(t, Exception)}


_KNOWN_EXCEPTIONS = {**_exception_types(vars(builtins).values()),
                     **_exception_types(getattr(errors, n) for n in errors.__all__)}
"""The allow-list every side shares: builtin exceptions and dacstyle's error tree."""


def decode_exception(body: dict[str, Any], allowed: Iterable[type] = ()) -> BaseException:
    """Rebuild a remote exception from the allow-list: builtins, dacstyle's tree and ``allowed``.

    Nothing is imported and no module is searched: a type not on the list (or whose
    constructor rejects the args) arrives as :class:`~dacstyle.errors.RemoteError`
    with the remote type name. Attributes are restored; ``remote_traceback`` is set.
    """
    body = body if isinstance(body, dict) else {}
    remote_type = f"{body.get('module')}.{body.get('name')}"
    message = str(body.get("message", ""))
    tb = body.get("traceback") if isinstance(body.get("traceback"), str) else None
    args = decode(body.get("args", []))
    cls = _KNOWN_EXCEPTIONS.get(remote_type) or _exception_types(allowed).get(remote_type)
    exc = _instantiate(cls, args if isinstance(args, list) else []) if cls is not None else None
    if exc is None:
        exc = errors.RemoteError(message, remote_type=remote_type, remote_traceback=tb)
    else:
        attrs = body.get("attrs")
        for key, value in (attrs.items() if isinstance(attrs, dict) else ()):
            if isinstance(key, str) and key.isidentifier() and not key.startswith("_"):
                try:
                    setattr(exc, key, decode(value))
                except (AttributeError, TypeError):
                    pass  # a read-only attribute keeps the value the constructor gave it
    try:
        exc.remote_traceback = tb  # type: ignore[attr-defined]
    except AttributeError:
        pass
    if tb:
        exc.add_note(f"--- remote traceback ---\n{tb.rstrip()}")
    return exc


def _instantiate(cls: type, args: list) -> BaseException | None:
    """``cls(*args)``; if the constructor wants other arguments, an instance with ``args`` set."""
    try:
        return cls(*args)
    except Exception:
        pass
    try:
        exc = cls.__new__(cls)
        exc.args = tuple(args)
        return exc
    except Exception:
        return None


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "__nd__": _decode_nd,
    "__shm__": _decode_shm,
    "__np__": _decode_np,
    "__tuple__": lambda body: tuple([v if type(v) in _PLAIN else decode(v) for v in body]),
    "__bytes__": _unb64,
    "__map__": lambda body: {_hashable(decode(k)): decode(v) for k, v in body},
    "__space__": _decode_space,
    "__graph__": lambda body: spaces.GraphInstance(*(decode(v) for v in body)),
    "__exc__": decode_exception,
    "__cs__": _decode_space_json,
    "__config__": _decode_configuration,
}


def _hashable(key: Any) -> Any:
    return key.item() if isinstance(key, np.generic) else key
