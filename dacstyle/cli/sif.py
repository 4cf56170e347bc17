"""``dacstyle inspect`` and ``dacstyle pack``: look into and build SIF images."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ImageError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``inspect`` and ``pack`` subcommands."""
    p = subparsers.add_parser(
        "inspect", help="show a SIF image's header, objects, labels and definition file",
        description="Read a SIF image without Apptainer and show its header, data objects "
                    "(with partition, signature and other type-specific fields), labels "
                    "and definition file. The structure is verified first.")
    p.add_argument("image", metavar="IMAGE", type=Path, help="path of the .sif file")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--key", action="append", default=[], metavar="PEM", type=Path,
                   help="public key (PEM) to check DSSE signatures with; repeatable")
    p.set_defaults(func=_inspect)

    p = subparsers.add_parser(
        "pack", help="pack a directory, or this Python environment, into a SIF image",
        description="Pack DIR (it becomes the image's /) into OUT.sif with mksquashfs, "
                    "or with --from-env the running interpreter, its standard library, the "
                    "packages dacstyle needs and their shared libraries, at their host paths. "
                    "Needs squashfs-tools; Apptainer is not needed.",
        epilog="examples:\n  dacstyle pack rootfs/ bench.sif --label org.example.name=bench\n"
               "  dacstyle pack --from-env env.sif",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="DIR OUT.sif, or only OUT.sif with --from-env")
    p.add_argument("--from-env", action="store_true",
                   help="pack the running Python environment (every installed package) instead of a directory")
    p.add_argument("--deffile", type=Path, metavar="F",
                   help="definition file to store in the image (directory packs)")
    p.add_argument("--label", action="append", default=[], metavar="K=V",
                   help="label to store in the image; repeatable")
    p.add_argument("--compression", default=None, metavar="ALG", choices=("gzip", "lz4", "zstd", "xz", "lzo"),
                   help="mksquashfs compressor: gzip (directory default), lz4 (environment "
                        "default), zstd, xz")
    p.add_argument("--level", type=int, default=None, help="compression level")
    p.set_defaults(func=_pack)


def _inspect(args: argparse.Namespace) -> int:
    from ..images.sif import verify_image
    from ..images.signatures import inspect_signatures

    img = verify_image(args.image, require_squashfs=False)
    info = img.to_dict()
    sigs = inspect_signatures(img, args.key)
    info["signatures"] = [s.to_dict() for s in sigs]
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        print()
        return 0
    h = info["header"]
    print(f"{img.path}  ({img.file_size} bytes)")
    for key in ("launch_script", "version", "arch", "uuid", "created_at", "modified_at",
                "descriptors_total", "descriptors_free", "data_offset", "data_size"):
        print(f"  {key:18} {h[key]!r}" if key == "launch_script" else f"  {key:18} {h[key]}")
    print(f"objects ({len(img.descriptors)}):")
    for d in img.descriptors:
        link = f" link={'group ' if d.link_is_group else ''}{d.link}" if d.link else ""
        extra = " ".join(f"{k}={v}" for k, v in d.extra.items())
        print(f"  {d.id:3} {d.data_type:15} group={d.group_id}{link} offset={d.offset} "
              f"size={d.size} {d.name!r} {extra}".rstrip())
    for s in sigs:
        state = ("verified" if s.authenticated and s.integrity_ok
                 else "integrity ok, signer not checked" if s.integrity_ok else s.error)
        print(f"signature {s.signature_id} ({s.kind}, {s.target}): {state}")
    if info["labels"]:
        print("labels:")
        for k, v in sorted(info["labels"].items()):
            print(f"  {k}: {v}")
    if info["deffile"]:
        print("deffile:")
        print("  " + info["deffile"].rstrip("\n").replace("\n", "\n  "))
    return 0


def _labels(items: list[str]) -> dict[str, str]:
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ImageError(f"--label {item!r}: expected KEY=VALUE")
        labels[key] = value
    return labels


def _pack(args: argparse.Namespace) -> int:
    from ..images import pack

    labels = _labels(args.label)
    if args.deffile is not None and not args.deffile.is_file():
        raise ImageError(f"--deffile {args.deffile}: no such file")
    deffile = args.deffile.read_text() if args.deffile else None
    out = Path(args.paths[-1])
    if not out.parent.is_dir():
        raise ImageError(f"cannot write {out}: folder {out.parent} does not exist")
    if args.from_env:
        if len(args.paths) != 1:
            raise ImageError("pack --from-env takes only OUT.sif")
        comp = args.compression or pack.DEFAULT_COMPRESSION[0]
        level = args.level if args.compression else pack.DEFAULT_COMPRESSION[1]
        result = pack.pack_environment(args.paths[0], labels=labels, compression=comp, compression_level=level)
    else:
        if len(args.paths) != 2:
            raise ImageError("pack needs DIR and OUT.sif (or --from-env OUT.sif)")
        result = pack.pack_directory(args.paths[0], args.paths[1], deffile=deffile,
                                     labels=labels, compression=args.compression or "gzip",
                                     compression_level=args.level)
    print(result.summary())
    return 0
