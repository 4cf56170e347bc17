"""The image catalogue: benchmark name + version -> one image (reference, sha256, size, mirrors).

An experiment identifier such as ``"sigmoid@0.1.0"`` pins exactly one entry.
The catalogue never names a registry path or digest that does not exist: no
image is published yet, so every bundled entry is of kind ``local-build``
(the runner packs one with ``dacstyle pack --from-env`` and records its digest
in the cache under the identifier). Users point entries at real images:

* through configuration: ``DACSTYLE_CATALOGUE=/path/catalogue.json`` holding
  ``{"images": {"sigmoid@0.1.0": {"reference": "oras://...", "sha256": "..."}}}``;
* in code: ``load_catalogue({"sigmoid@0.1.0": {...}})`` or
  ``Catalogue.bundled().override("sigmoid@0.1.0", reference=...)``;
* per runner: passing ``image=...`` to the runner, which bypasses the catalogue.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Mapping

from .. import __version__
from ..errors import ConfigError, ImageNotFoundError
from .refs import normalize_sha256, parse_ref

__all__ = ["CatalogueEntry", "Catalogue", "load_catalogue", "CATALOGUE_ENV", "KINDS"]

CATALOGUE_ENV = "DACSTYLE_CATALOGUE"  # read by dacstyle.config, like every DACSTYLE_* setting
KINDS = ("local-build", "remote")
_ID = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<version>[A-Za-z0-9][A-Za-z0-9_.+-]*))?$")


@dataclass(frozen=True)
class CatalogueEntry:
    """One benchmark image. ``kind`` is ``remote`` (fetch ``reference``) or ``local-build``."""

    name: str
    version: str
    kind: str = "local-build"
    reference: str | None = None
    sha256: str | None = None
    size: int | None = None
    mirrors: tuple[str, ...] = ()
    build: str = "dacstyle pack --from-env"
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"catalogue entry {self.id}: kind {self.kind!r} is not one of {KINDS}")
        if self.kind == "remote" and not self.reference:
            raise ConfigError(f"catalogue entry {self.id}: a remote entry needs a reference")
        if self.reference:
            parse_ref(self.reference)  # raises ImageError early on a malformed reference
        if self.sha256:
            object.__setattr__(self, "sha256", normalize_sha256(self.sha256))
        object.__setattr__(self, "mirrors", tuple(self.mirrors))

    @property
    def id(self) -> str:
        """``name@version``: the experiment identifier that pins this image."""
        return f"{self.name}@{self.version}"

    @property
    def sources(self) -> tuple[str, ...]:
        """The reference followed by its mirrors."""
        return ((self.reference,) if self.reference else ()) + self.mirrors

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mirrors"] = list(self.mirrors)
        return {k: v for k, v in data.items() if v not in (None, "", (), [], {})}

    @classmethod
    def from_dict(cls, identifier: str, data: Mapping[str, Any], base: "CatalogueEntry | None" = None
                  ) -> "CatalogueEntry":
        """Build an entry from JSON-like data, on top of ``base`` when overriding one."""
        name, version = split_id(identifier)
        if not isinstance(data, Mapping):
            raise ConfigError(f"catalogue entry {identifier!r} must be an object, not {type(data).__name__}")
        known = {"kind", "reference", "sha256", "size", "mirrors", "build", "notes"}
        fields_ = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        if "reference" in fields_ and "kind" not in fields_:
            fields_["kind"] = "remote" if fields_["reference"] else "local-build"
        if "mirrors" in fields_:
            fields_["mirrors"] = tuple(fields_["mirrors"] or ())
        if base is not None:
            return replace(base, **fields_, extra={**base.extra, **extra})
        if version is None:
            raise ConfigError(f"catalogue identifier {identifier!r} needs a version: name@version")
        return cls(name=name, version=version, extra=extra, **fields_)


def split_id(identifier: str) -> tuple[str, str | None]:
    """``'sigmoid@0.1.0'`` -> ``('sigmoid', '0.1.0')``; ``'sigmoid'`` -> ``('sigmoid', None)``."""
    match = _ID.match(identifier.strip()) if isinstance(identifier, str) else None
    if not match:
        raise ImageNotFoundError(f"{identifier!r} is not a catalogue identifier (name or name@version)")
    return match.group("name"), match.group("version")


def is_catalogue_id(text: str) -> bool:
    """True when ``text`` looks like ``name`` or ``name@version`` (no path, no scheme)."""
    return isinstance(text, str) and "://" not in text and "/" not in text and bool(_ID.match(text.strip()))


def _version_key(version: str) -> tuple:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.+-]", version))


class Catalogue:
    """A set of :class:`CatalogueEntry` keyed by ``name@version``."""

    def __init__(self, entries: Iterator[CatalogueEntry] | list[CatalogueEntry] = ()) -> None:
        self._entries: dict[str, CatalogueEntry] = {}
        for entry in entries:
            self._entries[entry.id] = entry

    @classmethod
    def bundled(cls) -> "Catalogue":
        """The benchmarks shipped with dacstyle: all ``local-build`` until images are published."""
        return cls(CatalogueEntry(name=name, version=__version__, kind="local-build",
                                  notes="no published image yet: built locally and recorded in the cache")
                   for name in ("sigmoid", "luby"))

    def get(self, identifier: str) -> CatalogueEntry:
        """The entry for ``name@version`` (or the newest version of ``name``)."""
        name, version = split_id(identifier)
        if version is not None:
            entry = self._entries.get(f"{name}@{version}")
            if entry is None:
                raise ImageNotFoundError(f"no catalogue entry {identifier!r}; known: {', '.join(self.ids) or 'none'}")
            return entry
        versions = [e for e in self._entries.values() if e.name == name]
        if not versions:
            raise ImageNotFoundError(f"no catalogue entry for {name!r}; known: {', '.join(self.ids) or 'none'}")
        return max(versions, key=lambda e: _version_key(e.version))

    def __contains__(self, identifier: object) -> bool:
        try:
            self.get(identifier)  # type: ignore[arg-type]
        except ImageNotFoundError:
            return False
        return True

    def __iter__(self) -> Iterator[CatalogueEntry]:
        return iter(sorted(self._entries.values(), key=lambda e: (e.name, _version_key(e.version))))

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self]

    def override(self, identifier: str, **changes: Any) -> "Catalogue":
        """A copy with one entry changed (or added), e.g. ``reference=..., sha256=...``."""
        return self.merged({identifier: changes})

    def merged(self, data: Mapping[str, Any]) -> "Catalogue":
        """A copy with entries from ``{"images": {id: {...}}}`` or ``{id: {...}}`` applied on top."""
        images = data.get("images", data) if isinstance(data, Mapping) else None
        if not isinstance(images, Mapping):
            raise ConfigError("a catalogue must be an object mapping 'name@version' to entries")
        result = Catalogue(self._entries.values())
        for identifier, fields_ in images.items():
            base = result._entries.get(identifier)
            if base is None and split_id(identifier)[1] is None:
                base = result.get(identifier) if identifier in result else None
            entry = CatalogueEntry.from_dict(base.id if base else identifier, fields_, base)
            result._entries[entry.id] = entry
        return result

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], base: "Catalogue | None" = None) -> "Catalogue":
        """Read a JSON catalogue (applied on top of ``base``, default empty)."""
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read catalogue {path}: {exc}") from exc
        except ValueError as exc:
            raise ConfigError(f"catalogue {path} is not valid JSON: {exc}") from exc
        return (base or cls()).merged(data)

    def to_dict(self) -> dict[str, Any]:
        return {"images": {e.id: {k: v for k, v in e.to_dict().items() if k not in ("name", "version")}
                           for e in self}}

    def __repr__(self) -> str:
        return f"Catalogue({self.ids})"


def load_catalogue(overrides: Mapping[str, Any] | Catalogue | None = None) -> Catalogue:
    """The effective catalogue: bundled, then ``config.catalogue`` ($DACSTYLE_CATALOGUE), then ``overrides``."""
    from ..config import config

    if isinstance(overrides, Catalogue):
        return overrides
    result = Catalogue.bundled()
    path = config.catalogue
    if path:
        result = Catalogue.from_file(path, base=result)
    if overrides:
        result = result.merged(overrides)
    return result
