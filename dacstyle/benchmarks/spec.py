"""A benchmark as data: what to build inside the server and how to reach it.

A :class:`Benchmark` names a ``"module:callable"`` entry point and the keyword
arguments to call it with. The same spec builds the object locally
(:meth:`Benchmark.build`) or, serialized with :meth:`Benchmark.to_json`, inside a
server in another process or container. Environments are served as
``gymnasium.Env`` proxies; any other object is served with exactly the methods
listed in ``methods`` (``"__call__"`` makes the proxy callable); a plain function
is served as itself with ``factory=False``.
"""

from __future__ import annotations

import copy
import importlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

from ..errors import BenchmarkError

__all__ = ["Benchmark", "load_entry_point"]


def load_entry_point(name: str) -> Callable[..., Any]:
    """Resolve ``"package.module:attr.sub"`` to the object it names."""
    module_name, sep, attr_path = name.partition(":")
    if not sep or not module_name or not attr_path:
        raise BenchmarkError(f"entry point {name!r} is not of the form 'module:callable'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise BenchmarkError(f"entry point {name!r}: cannot import {module_name!r}: {exc}") from exc
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise BenchmarkError(f"entry point {name!r}: {module_name!r} has no {attr_path!r}") from exc
    if not callable(target):
        raise BenchmarkError(f"entry point {name!r} is not callable")
    return target


def _servable(method: Any) -> bool:
    return method == "__call__" or (isinstance(method, str) and method.isidentifier() and not method.startswith("_"))


_ENV_ATTRIBUTES = ("reset", "step", "observation_space", "action_space")
"""What a built object needs to be served as an environment."""


@dataclass
class Benchmark:
    """A JSON-serializable benchmark spec.

    ``entry_point`` is called as ``entry_point(**config)``; when ``seed`` is set and
    ``seed_key`` is not empty it is passed as ``config[seed_key]``. ``methods`` is
    None for a gymnasium environment, else the exact list of methods served to the
    host; ``agent_methods`` the subset served on the agent endpoint, if any.
    ``methods`` may name ``"__call__"``: the proxy is then callable. ``factory``
    False serves the entry point itself instead of what calling it returns (a
    plain function; ``methods`` then defaults to ``["__call__"]``, config stays empty).
    ``binds`` names host folders the server needs (``{"data": "SRC:DST[:ro|rw]"}``);
    a config string ``"{bind:data}"`` becomes that folder's path as the server
    sees it (DST in a container, SRC with the process runtime). ``companions``
    maps names to the specs (as dicts) of servers started first, each in its own
    container; the runner binds each one's agent endpoint in, and
    ``"{companion:NAME}"`` names that folder. ``finish`` (``"NAME.METHOD"``) is
    called on a companion after each run; its result is the run's
    ``extra[METHOD]`` (a competition's grade).
    ``exceptions`` names the benchmark's own exception classes (``"module:Class"``)
    that arrive on the host as their own type; any other non-builtin, non-dacstyle
    exception arrives as a ``RemoteError`` (the codec builds nothing it was not told to).
    ``attributes`` names what the host may read from an environment (``env.unwrapped.NAME``,
    ``get_wrapper_attr``, a vector env's ``get_attr``/``set_attr``); nothing else is readable.
    """

    name: str
    entry_point: str
    config: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    seed_key: str = "seed"
    methods: list[str] | None = None
    agent_methods: list[str] | None = None
    image: str | None = None
    binds: dict[str, str] = field(default_factory=dict)
    companions: dict[str, dict[str, Any]] = field(default_factory=dict)
    finish: str | None = None
    factory: bool = True
    exceptions: list[str] = field(default_factory=list)
    attributes: list[str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise BenchmarkError("a benchmark needs a non-empty name")
        if not isinstance(self.entry_point, str) or ":" not in self.entry_point:
            raise BenchmarkError(f"entry point {self.entry_point!r} is not of the form 'module:callable'")
        if not isinstance(self.config, dict):
            raise BenchmarkError(f"config must be a dict, not {type(self.config).__name__}")
        if not isinstance(self.factory, bool):
            raise BenchmarkError(f"factory must be True or False, not {self.factory!r}")
        if not self.factory:
            if self.config:
                raise BenchmarkError(f"{self.name!r} serves its entry point itself (factory=False): it takes no config")
            if self.methods is None:
                self.methods = ["__call__"]
        for attr in ("methods", "agent_methods", "attributes"):
            names = getattr(self, attr)
            if names is None:
                continue
            names = list(names)
            setattr(self, attr, names)
            bad = [m for m in names if not _servable(m) or (attr == "attributes" and m == "__call__")]
            if bad:
                raise BenchmarkError(f"{attr} must be public identifiers or '__call__', not {bad}")
        if not isinstance(self.exceptions, list) or not all(isinstance(e, str) and ":" in e for e in self.exceptions):
            raise BenchmarkError(f"exceptions must be a list of 'module:Class' names, not {self.exceptions!r}")
        if self.agent_methods and not set(self.agent_methods) <= set(self.methods or ()):
            raise BenchmarkError("agent_methods must be a subset of methods")
        from ..runtimes.base import Bind

        for name, text in self.binds.items():
            try:
                Bind.parse(text)
            except ValueError as exc:
                raise BenchmarkError(f"bind {name!r}: {exc}") from exc
        for name, companion in self.companions.items():
            if not _servable(name):
                raise BenchmarkError(f"companion name {name!r} must be an identifier")
            Benchmark.from_json(json.dumps(companion))
        if self.finish is not None:
            companion, _, method = self.finish.partition(".")
            if companion not in self.companions or method not in (self.companions[companion].get("methods") or ()):
                raise BenchmarkError(f"finish {self.finish!r} must name a companion and one of its methods")
        try:
            json.dumps(self.config, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise BenchmarkError(f"config of {self.name!r} is not plain JSON: {exc}") from exc

    def exception_types(self) -> tuple[type[BaseException], ...]:
        """The classes ``exceptions`` names, imported here (the host trusts its own spec)."""
        types = tuple(load_entry_point(name) for name in self.exceptions)
        bad = [name for name, t in zip(self.exceptions, types) if not (isinstance(t, type) and issubclass(t, BaseException))]
        if bad:
            raise BenchmarkError(f"exceptions {bad} do not name exception classes")
        return types  # type: ignore[return-value]

    # -- the spec ------------------------------------------------------------------
    def set_seed(self, seed: int | None) -> "Benchmark":
        """Seed the benchmark (instance sets and the first reset); returns self."""
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise BenchmarkError(f"seed must be a non-negative int, not {seed!r}")
        self.seed = seed
        return self

    @property
    def is_environment(self) -> bool:
        """True when the benchmark builds a gymnasium environment."""
        return self.methods is None

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments the entry point is called with."""
        kwargs = copy.deepcopy(self.config)
        if self.seed is not None and self.seed_key:
            kwargs[self.seed_key] = self.seed
        return kwargs

    def resolved(self, paths: dict[str, str]) -> "Benchmark":
        """A copy whose config has ``{bind:NAME}`` / ``{companion:NAME}`` replaced by ``paths``."""

        def substitute(value: Any) -> Any:
            if isinstance(value, str):
                for name, path in paths.items():
                    value = value.replace("{" + name + "}", path)
                return value
            if isinstance(value, list):
                return [substitute(v) for v in value]
            if isinstance(value, dict):
                return {k: substitute(v) for k, v in value.items()}
            return value

        spec = Benchmark.from_json(self.to_json())
        spec.config = substitute(spec.config)
        return spec

    def to_json(self) -> str:
        """The spec as a JSON string (what travels to the server)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Benchmark":
        """Rebuild a spec from :meth:`to_json` output; unknown keys are rejected."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BenchmarkError(f"benchmark spec is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise BenchmarkError("benchmark spec must be a JSON object")
        known = {f.name for f in fields(Benchmark)}
        unknown = set(data) - known
        if unknown:
            raise BenchmarkError(f"unknown benchmark spec keys: {sorted(unknown)}")
        try:
            return Benchmark(**data)
        except TypeError as exc:
            raise BenchmarkError(f"incomplete benchmark spec: {exc}") from exc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Benchmark) and asdict(self) == asdict(other)

    # -- building ------------------------------------------------------------------
    def build(self) -> Any:
        """Build the benchmark object in this process (what the server does).

        A spec without ``methods`` must build an environment: anything else is a
        BenchmarkError that says to list the methods and use ``get_object()``.
        """
        factory = load_entry_point(self.entry_point)
        if not self.factory:
            return factory
        try:
            target = factory(**self.kwargs())
        except BenchmarkError:
            raise
        except Exception as exc:
            raise BenchmarkError(f"building {self.name!r} with {self.entry_point}: {exc!r}") from exc
        missing = [a for a in _ENV_ATTRIBUTES if not hasattr(target, a)] if self.is_environment else []
        if missing:
            raise BenchmarkError(
                f"{self.name!r} built a {type(target).__name__}, not an environment (no {', '.join(missing)}): "
                "list the methods to serve, Benchmark(..., methods=[...]), and use get_object()"
            )
        return target

    def get_environment(self) -> Any:
        """Build the gymnasium environment locally, without any server."""
        if not self.is_environment:
            raise BenchmarkError(f"{self.name!r} serves an object (methods {self.methods}), not an environment: "
                                 "build() builds it here")
        return self.build()
