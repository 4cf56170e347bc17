"""Write SIF files the way the reference implementation (sylabs/sif) does.

Header at 0, a table of 48 descriptors at 4096, data from the end of the table
on; a partition starts at the next multiple of 4096 (the page size), the
padding before it counting in its ``size_with_padding``; other objects follow
each other unaligned. Written with the same inputs and a deterministic time/id,
the result is byte-identical to the reference implementation's output.
"""

from __future__ import annotations

import os
import shutil
import struct
import time
import uuid as _uuid
from dataclasses import dataclass
from pathlib import Path

from dacstyle.errors import ImageError
from dacstyle.images.sif import (
    _DESCRIPTOR, _HEADER, ARCH_CODES, DATA_TYPE_CODES, DESCRIPTOR_SIZE, GROUP_MASK, MAGIC,
    VERSION,
)

__all__ = ["ObjectInput", "partition_extra", "write_sif", "DEFAULT_LAUNCH_SCRIPT", "GO_ZERO_TIME"]

DEFAULT_LAUNCH_SCRIPT = "#!/usr/bin/env run-singularity\n"
#: Unix time of Go's zero ``time.Time``: what deterministic reference images store.
GO_ZERO_TIME = -62135596800
_FS = {"squashfs": 1, "ext3": 2, "archive": 3, "raw": 4, "encrypted-squashfs": 5}
_PART = {"system": 1, "primary-system": 2, "data": 3, "overlay": 4}


@dataclass(frozen=True)
class ObjectInput:
    """One data object to write: its type name, content (bytes or a file) and metadata."""

    data_type: str
    content: bytes | Path
    name: str = ""
    group_id: int = 1          # 0: no group
    link: int = 0
    link_is_group: bool = False
    alignment: int | None = None  # default: 4096 (page) for partitions, none otherwise
    extra: bytes = b""


def partition_extra(fs_type: str = "squashfs", part_type: str = "primary-system",
                    arch: str = "amd64") -> bytes:
    """The descriptor ``extra`` field of a partition: fs type, partition type, arch."""
    try:
        return struct.pack("<ii3s", _FS[fs_type], _PART[part_type],
                           ARCH_CODES[arch].encode() + b"\x00")
    except KeyError as exc:
        raise ImageError(f"unknown partition setting {exc.args[0]!r}") from exc


def _aligned(offset: int, alignment: int) -> int:
    if alignment and offset % alignment:
        return offset - offset % alignment + alignment
    return offset


def write_sif(out: str | os.PathLike[str], objects: list[ObjectInput], *,
              launch_script: str = DEFAULT_LAUNCH_SCRIPT, image_id: str | None = None,
              timestamp: int | None = None, descriptor_capacity: int = 48) -> Path:
    """Write a new SIF at ``out`` holding ``objects`` in order; returns the path.

    ``image_id`` defaults to a random UUID and ``timestamp`` to now. The header
    arch is taken from the primary partition, as the reference does. The file
    is written to ``out`` + ".tmp" and renamed, so a reader never sees half an image.
    """
    if len(objects) > descriptor_capacity:
        raise ImageError(f"{len(objects)} objects do not fit {descriptor_capacity} descriptors")
    launch = launch_script.encode()
    if len(launch) >= 32:
        raise ImageError(f"launch script too long ({len(launch)} bytes, at most 31)")
    now = int(time.time()) if timestamp is None else timestamp
    uid = _uuid.UUID(image_id) if image_id is not None else _uuid.uuid4()
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    descriptors_offset = 4096
    table_size = descriptor_capacity * DESCRIPTOR_SIZE
    data_offset = descriptors_offset + table_size
    arch = b"00\x00"
    table = bytearray(table_size)
    end = data_offset
    try:
        with open(tmp, "wb") as f:
            for i, obj in enumerate(objects):
                code = DATA_TYPE_CODES.get(obj.data_type)
                if code is None:
                    raise ImageError(f"unknown SIF data type {obj.data_type!r}")
                if len(obj.extra) > 384 or len(obj.name.encode()) > 128:
                    raise ImageError(f"object {i + 1}: name or extra field too long")
                align = obj.alignment if obj.alignment is not None else (
                    4096 if obj.data_type == "partition" else 1)
                offset = _aligned(end, align)
                f.seek(offset)
                size = _copy_content(obj.content, f)
                if obj.data_type == "partition" and obj.extra[4:8] == struct.pack("<i", 2):
                    arch = obj.extra[8:11]
                link = obj.link | GROUP_MASK if obj.link_is_group else obj.link
                group = (obj.group_id | GROUP_MASK) if obj.group_id else GROUP_MASK
                _DESCRIPTOR.pack_into(
                    table, i * DESCRIPTOR_SIZE, code, True, i + 1, group, link, offset, size,
                    offset - end + size, now, now, 0, 0, obj.name.encode(), obj.extra)
                end = offset + size
            f.truncate(end)
            f.seek(descriptors_offset)
            f.write(table)
            f.seek(0)
            f.write(_HEADER.pack(
                launch, MAGIC, VERSION, arch, uid.bytes, now, now,
                descriptor_capacity - len(objects), descriptor_capacity, descriptors_offset,
                table_size, data_offset, end - data_offset))
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _copy_content(content: bytes | Path, f) -> int:
    if isinstance(content, (bytes, bytearray)):
        f.write(content)
        return len(content)
    start = f.tell()
    with open(content, "rb") as src:
        shutil.copyfileobj(src, f, 1 << 20)
    return f.tell() - start
