"""Read and verify Singularity Image Format (SIF) files without Apptainer.

Layout (all integers little-endian), as written by the reference Go
implementation (github.com/sylabs/sif)::

    0     header (128 bytes): launch script[32] magic[10] "SIF_MAGIC\\0"
          version[3] "01\\0" arch[3] uuid[16] created modified (int64)
          descriptors free, total, offset, size; data offset, size (int64)
    4096  descriptors (585 bytes each, ``total`` of them, unused ones zeroed)
    ...   data objects, each aligned (4096 by default)

Only the header, the descriptors and a few bytes of the primary partition are
read, so opening and verifying a 500 MB image takes milliseconds. Signatures
live in :mod:`dacstyle.images.signatures`, writing in :mod:`dacstyle.images.sifwrite`.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import uuid as _uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from dacstyle.errors import ImageFormatError, ImageNotFoundError

__all__ = [
    "HEADER_SIZE",
    "DESCRIPTOR_SIZE",
    "DATA_TYPES",
    "Header",
    "Descriptor",
    "SifImage",
    "open_image",
    "verify_image",
]

HEADER_SIZE = 128
DESCRIPTOR_SIZE = 585
MAGIC = b"SIF_MAGIC\x00"
VERSION = b"01\x00"
GROUP_MASK = 0xF0000000
SQUASHFS_MAGIC = b"hsqs"
#: More descriptors than any image needs (the reference implementation writes 48): a header
#: claiming more is rejected before anything is read, so a hostile header costs no memory.
MAX_DESCRIPTORS = 4096
#: The largest object read whole (definition file, labels, JSON, signatures); partitions are streamed.
MAX_METADATA_BYTES = 16 << 20
INSPECT_METADATA_NAME = "inspect-metadata.json"

_HEADER = struct.Struct("<32s10s3s3s16s8q")
_DESCRIPTOR = struct.Struct("<i?III3q4q128s384s")
assert _HEADER.size == HEADER_SIZE and _DESCRIPTOR.size == DESCRIPTOR_SIZE

#: data type code -> name, in the reference implementation's order.
DATA_TYPES: dict[int, str] = {
    0x4001: "deffile",
    0x4002: "envvar",
    0x4003: "labels",
    0x4004: "partition",
    0x4005: "signature",
    0x4006: "generic-json",
    0x4007: "generic",
    0x4008: "crypto-message",
    0x4009: "sbom",
    0x400A: "oci-root-index",
    0x400B: "oci-blob",
}
DATA_TYPE_CODES = {name: code for code, name in DATA_TYPES.items()}
FS_TYPES = {1: "squashfs", 2: "ext3", 3: "archive", 4: "raw", 5: "encrypted-squashfs"}
PART_TYPES = {1: "system", 2: "primary-system", 3: "data", 4: "overlay"}
HASH_TYPES = {1: "sha256", 2: "sha384", 3: "sha512", 4: "blake2s", 5: "blake2b"}
CRYPTO_FORMATS = {1: "openpgp", 2: "pem"}
CRYPTO_MESSAGES = {0x100: "clear-signature", 0x200: "rsa-oaep"}
SBOM_FORMATS = {
    1: "cyclonedx-json", 2: "cyclonedx-xml", 3: "github-json", 4: "spdx-json",
    5: "spdx-rdf", 6: "spdx-tag-value", 7: "spdx-yaml", 8: "syft-json",
}
#: SIF header architecture code -> Go architecture name.
ARCHES = {
    "00": "unknown", "01": "386", "02": "amd64", "03": "arm", "04": "arm64",
    "05": "ppc64", "06": "ppc64le", "07": "mips", "08": "mipsle", "09": "mips64",
    "10": "mips64le", "11": "s390x", "12": "riscv64",
}
ARCH_CODES = {name: code for code, name in ARCHES.items()}


def _cstr(raw: bytes) -> str:
    return raw.rstrip(b"\x00").decode("utf-8", "replace")


def _arch_name(raw: bytes) -> str:
    code = _cstr(raw)
    return ARCHES.get(code, f"unknown({code})")


@dataclass(frozen=True)
class Header:
    """The 128-byte global header."""

    launch_script: str
    magic: str
    version: str
    arch: str
    uuid: str
    created_at: int
    modified_at: int
    descriptors_free: int
    descriptors_total: int
    descriptors_offset: int
    descriptors_size: int
    data_offset: int
    data_size: int
    raw: bytes = field(repr=False, compare=False)

    @classmethod
    def parse(cls, raw: bytes) -> "Header":
        launch, magic, version, arch, uid, *numbers = _HEADER.unpack(raw)
        return cls(_cstr(launch), _cstr(magic), _cstr(version), _arch_name(arch),
                   str(_uuid.UUID(bytes=uid)), *numbers, raw=raw)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "raw"}


@dataclass(frozen=True)
class Descriptor:
    """One used data-object descriptor; ``extra`` holds the type-specific fields."""

    index: int
    id: int
    group_id: int          # 0 when the object belongs to no group
    link: int              # linked object id or group id, 0 when none
    link_is_group: bool
    data_type: str         # a DATA_TYPES name, or "unknown(0x....)"
    data_type_code: int
    offset: int
    size: int
    size_with_padding: int
    created_at: int
    modified_at: int
    name: str
    extra: dict[str, Any]
    raw: bytes = field(repr=False, compare=False)

    @classmethod
    def parse(cls, index: int, raw: bytes) -> "Descriptor | None":
        (dtype, used, oid, gid, link, offset, size, padded,
         ctime, mtime, _uid, _gid, name, extra) = _DESCRIPTOR.unpack(raw)
        if not used:
            return None
        return cls(
            index=index, id=oid, group_id=gid & ~GROUP_MASK & 0xFFFFFFFF,
            link=link & ~GROUP_MASK & 0xFFFFFFFF,
            link_is_group=(link & GROUP_MASK) == GROUP_MASK,
            data_type=DATA_TYPES.get(dtype, f"unknown({dtype:#x})"), data_type_code=dtype,
            offset=offset, size=size, size_with_padding=padded, created_at=ctime,
            modified_at=mtime, name=_cstr(name), extra=_decode_extra(dtype, extra), raw=raw,
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "raw"}


def _decode_extra(dtype: int, extra: bytes) -> dict[str, Any]:
    name = DATA_TYPES.get(dtype)
    if name == "partition":
        fs, part = struct.unpack_from("<ii", extra)
        return {"fs_type": FS_TYPES.get(fs, f"unknown({fs})"),
                "part_type": PART_TYPES.get(part, f"unknown({part})"),
                "arch": _arch_name(extra[8:11])}
    if name == "signature":
        (hashtype,) = struct.unpack_from("<i", extra)
        entity = extra[4:4 + 256]
        fingerprint = entity[:20].hex().upper() if any(entity[:20]) else None
        return {"hash_type": HASH_TYPES.get(hashtype, f"unknown({hashtype})"),
                "entity": fingerprint}
    if name == "crypto-message":
        fmt, msg = struct.unpack_from("<ii", extra)
        return {"format": CRYPTO_FORMATS.get(fmt, f"unknown({fmt})"),
                "message": CRYPTO_MESSAGES.get(msg, f"unknown({msg:#x})")}
    if name == "sbom":
        (fmt,) = struct.unpack_from("<i", extra)
        return {"format": SBOM_FORMATS.get(fmt, f"unknown({fmt})")}
    if name in ("oci-root-index", "oci-blob"):
        return {"digest": _cstr(extra)}
    return {}


@dataclass(frozen=True)
class SifImage:
    """A parsed SIF file: header and used descriptors. Objects are read on demand."""

    path: Path
    file_size: int
    header: Header
    descriptors: list[Descriptor]

    def primary_partition(self) -> Descriptor:
        """The primary system partition if it is squashfs, else ImageFormatError."""
        for d in self.descriptors:
            if d.data_type == "partition" and d.extra["part_type"] == "primary-system":
                if d.extra["fs_type"] != "squashfs":
                    raise ImageFormatError(f"{self.path}: primary partition is "
                                           f"{d.extra['fs_type']}, not squashfs")
                return d
        raise ImageFormatError(f"{self.path} has no squashfs primary partition")

    @property
    def squashfs_offset(self) -> int:
        """Byte offset of the primary squashfs partition (for ``squashfuse -o offset=``)."""
        return self.primary_partition().offset

    @property
    def squashfs_size(self) -> int:
        return self.primary_partition().size

    def read_object(self, descriptor: Descriptor) -> bytes:
        """The bytes of one metadata object; ImageFormatError over MAX_METADATA_BYTES (bounded memory)."""
        if descriptor.size > MAX_METADATA_BYTES:
            raise ImageFormatError(f"{self.path}: object {descriptor.id} ({descriptor.data_type}) claims "
                                   f"{descriptor.size} bytes, more than the {MAX_METADATA_BYTES} allowed")
        return b"".join(self.iter_object(descriptor))

    def iter_object(self, descriptor: Descriptor, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The bytes of one data object in chunks: hashing a multi-GB partition takes bounded memory."""
        with open(self.path, "rb") as f:
            f.seek(descriptor.offset)
            done = 0
            while done < descriptor.size:
                data = f.read(min(chunk, descriptor.size - done))
                if not data:
                    raise ImageFormatError(f"{self.path}: object {descriptor.id} truncated at byte "
                                           f"{descriptor.offset + done}")
                done += len(data)
                yield data

    def find(self, data_type: str, name: str | None = None) -> list[Descriptor]:
        """Descriptors of one data type (and name, when given), in id order."""
        return [d for d in self.descriptors
                if d.data_type == data_type and (name is None or d.name == name)]

    def deffile(self) -> str | None:
        """The definition file the image was built from, if stored."""
        found = self.find("deffile")
        return self.read_object(found[0]).decode("utf-8", "replace") if found else None

    def labels(self) -> dict[str, str]:
        """Labels from JSON.Labels objects and Apptainer's ``inspect-metadata.json``."""
        labels: dict[str, str] = {}
        for d in self.find("labels"):
            labels.update(self._json_object(d))
        for d in self.find("generic-json", INSPECT_METADATA_NAME):
            meta = self._json_object(d)
            attrs = meta.get("data", {}).get("attributes", {}) if isinstance(meta, dict) else {}
            labels.update(attrs.get("labels") or {})
        return labels

    def _json_object(self, d: Descriptor) -> dict:
        try:
            value = json.loads(self.read_object(d))
        except ValueError as exc:
            raise ImageFormatError(f"{self.path}: object {d.id} ({d.data_type}) "
                                   f"is not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise ImageFormatError(f"{self.path}: object {d.id} ({d.data_type}) "
                                   "is not a JSON object")
        return value

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary: header, objects, labels, deffile."""
        return {
            "path": str(self.path),
            "file_size": self.file_size,
            "header": self.header.to_dict(),
            "objects": [d.to_dict() for d in self.descriptors],
            "labels": self.labels(),
            "deffile": self.deffile(),
        }


def open_image(path: str | os.PathLike[str]) -> SifImage:
    """Parse the header and descriptors of the SIF file at ``path``.

    Raises ImageNotFoundError for a missing path and ImageFormatError when the
    file is not a SIF or its header or descriptor table is cut short.
    """
    p = Path(path)
    try:
        with os.fdopen(os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):  # a FIFO or device is never read as an image
                kind = "is a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
                raise ImageFormatError(f"{p}: {kind}, not a SIF file")
            size = info.st_size
            raw = f.read(HEADER_SIZE)
            if len(raw) >= 42 and raw[32:42] != MAGIC:
                raise ImageFormatError(f"{p}: bad magic {raw[32:42]!r}, "
                                       "expected 'SIF_MAGIC' (not a SIF file)")
            if len(raw) < HEADER_SIZE:
                raise ImageFormatError(f"{p}: truncated at byte {len(raw)}: a SIF header "
                                       f"needs {HEADER_SIZE} bytes (not a SIF file?)")
            header = Header.parse(raw)
            if raw[42:45] != VERSION:
                raise ImageFormatError(f"{p}: unsupported SIF version {header.version!r}")
            _check_table(p, header, size)
            table_size = header.descriptors_total * DESCRIPTOR_SIZE
            f.seek(header.descriptors_offset)
            table = f.read(table_size)
    except FileNotFoundError as exc:
        raise ImageNotFoundError(f"{p}: no such image file") from exc
    except OSError as exc:
        raise ImageFormatError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    if len(table) < table_size:
        raise ImageFormatError(
            f"{p}: truncated at byte {header.descriptors_offset + len(table)}: the descriptor "
            f"table needs bytes {header.descriptors_offset}..{header.descriptors_offset + table_size}")
    descriptors = []
    for i in range(header.descriptors_total):
        d = Descriptor.parse(i, table[i * DESCRIPTOR_SIZE:(i + 1) * DESCRIPTOR_SIZE])
        if d is not None:
            descriptors.append(d)
    return SifImage(p, size, header, descriptors)


def _check_table(p: Path, header: Header, size: int) -> None:
    """Reject a descriptor table that is absurd or lies outside the file, before reading it."""
    total, offset = header.descriptors_total, header.descriptors_offset
    if not 0 <= total <= MAX_DESCRIPTORS or offset < HEADER_SIZE:
        raise ImageFormatError(f"{p}: corrupt header: descriptor table at {offset}, {total} entries "
                               f"(at most {MAX_DESCRIPTORS} allowed)")
    end = offset + total * DESCRIPTOR_SIZE
    if end > size:
        raise ImageFormatError(f"{p}: truncated at byte {size}: the descriptor table needs "
                               f"bytes {offset}..{end}")


def verify_image(path: str | os.PathLike[str], *, require_squashfs: bool = True) -> SifImage:
    """Check a SIF's structure cheaply (no hashing) and return it opened.

    Checks the header (magic, version, table sizes), that the data section and
    every object lies inside the file and that object ids are unique. With
    ``require_squashfs`` (the default: what a runnable image needs) the image
    must also have a primary partition whose data starts with the squashfs
    magic and fits its object; ``require_squashfs=False`` checks only the
    container structure (images holding only metadata, OCI blobs, test vectors).
    """
    img = open_image(path)
    h, p, size = img.header, img.path, img.file_size
    if h.descriptors_size != h.descriptors_total * DESCRIPTOR_SIZE:
        raise ImageFormatError(f"{p}: corrupt header: descriptor table size {h.descriptors_size}"
                               f" != {h.descriptors_total} x {DESCRIPTOR_SIZE}")
    if not 0 <= h.descriptors_free <= h.descriptors_total:
        raise ImageFormatError(f"{p}: corrupt header: {h.descriptors_free} free descriptors "
                               f"of {h.descriptors_total}")
    used = h.descriptors_total - h.descriptors_free
    if used != len(img.descriptors):
        raise ImageFormatError(f"{p}: corrupt header: says {used} descriptors are used, "
                               f"table has {len(img.descriptors)}")
    if h.data_offset < h.descriptors_offset + h.descriptors_size or h.data_size < 0:
        raise ImageFormatError(f"{p}: corrupt header: data section at {h.data_offset} "
                               "overlaps the descriptor table")
    if h.data_offset + h.data_size > size:
        raise ImageFormatError(f"{p}: truncated at byte {size}: the header says the data "
                               f"section ends at byte {h.data_offset + h.data_size}")
    seen: set[int] = set()
    for d in img.descriptors:
        where = f"descriptor {d.index} (object {d.id}, {d.data_type})"
        if d.id in seen or d.id == 0:
            raise ImageFormatError(f"{p}: {where} has a duplicate or zero id")
        seen.add(d.id)
        if d.offset < h.data_offset or d.size < 0:
            raise ImageFormatError(f"{p}: {where} out of bounds: offset {d.offset} "
                                   f"before the data section at {h.data_offset}")
        if d.offset + d.size > size:
            raise ImageFormatError(f"{p}: {where} out of bounds: ends at byte "
                                   f"{d.offset + d.size}, file truncated at byte {size}")
    if require_squashfs:
        _check_squashfs(img, img.primary_partition())
    return img


def _check_squashfs(img: SifImage, prim: Descriptor) -> None:
    """The squashfs superblock: magic ``hsqs`` and ``bytes_used`` within the object."""
    with open(img.path, "rb") as f:
        f.seek(prim.offset)
        sb = f.read(96)
    if sb[:4] != SQUASHFS_MAGIC:
        raise ImageFormatError(f"{img.path}: object {prim.id} is declared squashfs but has "
                               f"bad magic {sb[:4]!r} at byte {prim.offset} (expected 'hsqs')")
    if len(sb) < 48:
        raise ImageFormatError(f"{img.path}: squashfs superblock truncated at byte "
                               f"{prim.offset + len(sb)}")
    (bytes_used,) = struct.unpack_from("<q", sb, 40)
    if bytes_used > prim.size:
        raise ImageFormatError(f"{img.path}: squashfs in object {prim.id} needs {bytes_used} "
                               f"bytes but the object holds {prim.size}")
