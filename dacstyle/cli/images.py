"""``dacstyle pull``, ``dacstyle images {list,add,rm,prune}`` and ``dacstyle push``."""

from __future__ import annotations

import argparse
import json
import sys

from ..config import config
from .args import at_least

__all__ = ["register"]

_REFS_HELP = """\
REF is a local .sif path, https://host/x.sif (plain http:// only for loopback),
oras://host[:port]/repo[:tag][@sha256:HEX], library:// or docker:// (needs
Apptainer), or a catalogue identifier such as sigmoid@0.1.0."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the image subcommands to the ``dacstyle`` parser."""
    raw = argparse.RawDescriptionHelpFormatter
    pull = subparsers.add_parser(
        "pull", help="fetch an image into the cache and print its path", formatter_class=raw,
        description="Fetch an image into the per-user cache (once, verified by sha256 and SIF structure) "
                    "and print the cached path.\n\n" + _REFS_HELP,
        epilog=f"cache folder: {config.cache_dir} (DACSTYLE_CACHE)")
    pull.add_argument("ref", metavar="REF", help="image reference or catalogue identifier")
    pull.add_argument("--sha256", metavar="HEX", help="pin the image content to this digest")
    pull.add_argument("--offline", action="store_true", default=None,
                      help="use only the cache, never the network (also DACSTYLE_OFFLINE=1)")
    pull.add_argument("--mirror", action="append", default=[], metavar="URL",
                      help="another source of the same image, tried when REF fails (repeatable)")
    pull.add_argument("--refresh", action="store_true", help="look up a tag again even if it is cached")
    pull.add_argument("--verify", action="store_true", help="re-hash a cached image before using it")
    pull.add_argument("--progress", choices=["auto", "always", "never"], default=None,
                      help="progress bar (default: DACSTYLE_PROGRESS, auto = only on a terminal)")
    pull.set_defaults(func=_pull)

    images = subparsers.add_parser(
        "images", help="list, add, remove and prune cached images",
        description="Manage the per-user image cache. Without a subcommand: list.",
        epilog=f"cache folder: {config.cache_dir} (DACSTYLE_CACHE)")
    images.set_defaults(func=_list, json=False)
    sub = images.add_subparsers(dest="images_command", metavar="SUBCOMMAND")
    listing = sub.add_parser("list", help="list cached images (digest, size, references)",
                             description="List cached images: digest, size, the references that point "
                                         "to them, and their path.")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=_list)
    add = sub.add_parser("add", help="record a locally built SIF in the cache",
                         description="Copy a local SIF (e.g. built with 'dacstyle pack') into the cache "
                                     "and record its sha256, optionally under a catalogue identifier.")
    add.add_argument("path", metavar="IMAGE", help="the .sif file")
    add.add_argument("--ref", metavar="ID", help="record it under this reference, e.g. sigmoid@0.1.0")
    add.add_argument("--sha256", metavar="HEX", help="what the file must hash to")
    add.set_defaults(func=_add)
    rm = sub.add_parser("rm", help="remove cached images by reference or digest",
                        description="Remove references (their image too when nothing else points to it) "
                                    "or images by digest (sha256:HEX, or a unique prefix of 8+ digits).")
    rm.add_argument("targets", nargs="+", metavar="REF_OR_DIGEST")
    rm.set_defaults(func=_rm)
    prune = sub.add_parser("prune", help="delete partial downloads and unreferenced files",
                           description="Delete interrupted downloads (.part files), image files no index "
                                       "entry records, and references whose file is gone.")
    prune.add_argument("--all", action="store_true", help="delete every cached image as well")
    prune.set_defaults(func=_prune)

    push = subparsers.add_parser(
        "push", help="upload a SIF to an OCI registry as an oras:// artifact", formatter_class=raw,
        description="Upload IMAGE as an OCI artifact the way 'oras push' and 'apptainer push' do "
                    "(config application/vnd.sylabs.sif.config.v1+json, one layer\n"
                    "application/vnd.sylabs.sif.layer.v1.sif) and print the pinned reference "
                    "oras://host/repo@sha256:... .",
        epilog="example: dacstyle push sigmoid.sif oras://127.0.0.1:5000/dacstyle/sigmoid:0.1.0")
    push.add_argument("image", metavar="IMAGE", help="the .sif file to upload")
    push.add_argument("target", metavar="oras://HOST[:PORT]/REPO[:TAG]", help="where to store it")
    push.add_argument("--chunk-size", type=at_least(1), default=None, metavar="BYTES",
                      help="upload in PATCH chunks of this size instead of one PUT")
    push.set_defaults(func=_push)


def _pull(args: argparse.Namespace) -> int:
    from ..images import pull

    image = pull(args.ref, sha256=args.sha256, offline=args.offline, mirrors=tuple(args.mirror),
                 refresh=args.refresh, full_check=args.verify, progress=args.progress)
    print(image.path)
    return 0


def _list(args: argparse.Namespace) -> int:
    from ..images import ImageCache

    cache = ImageCache()
    entries = list(cache.entries())
    if args.json:
        print(json.dumps([{"sha256": e.sha256, "size": e.size, "refs": list(e.refs), "path": str(e.path)}
                          for e in entries], indent=1))
        return 0
    if not entries:
        print(f"no cached images in {cache.root}", file=sys.stderr)
        return 0
    print(f"{'DIGEST':<19} {'SIZE':>10}  REFERENCES")
    for e in entries:
        print(f"sha256:{e.sha256[:12]} {_human(e.size):>10}  {', '.join(e.refs) or '-'}")
    print(f"{len(entries)} image(s), {_human(sum(e.size for e in entries))} in {cache.root}", file=sys.stderr)
    return 0


def _add(args: argparse.Namespace) -> int:
    from ..images import ImageCache

    image = ImageCache().add(args.path, ref=args.ref, sha256=args.sha256)
    print(image.path)
    return 0


def _rm(args: argparse.Namespace) -> int:
    from ..images import ImageCache

    cache = ImageCache()
    for target in args.targets:
        for sha in cache.remove(target):
            print(f"removed sha256:{sha}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from ..images import ImageCache

    deleted = ImageCache().prune(everything=args.all)
    for path in deleted:
        print(f"deleted {path}")
    print(f"{len(deleted)} file(s) deleted", file=sys.stderr)
    return 0


def _push(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..images import push
    from ..images.download import make_progress, progress_enabled

    size = Path(args.image).stat().st_size if Path(args.image).is_file() else None
    bar = make_progress(size, f"push {Path(args.image).name}", enabled=progress_enabled())
    try:
        print(push(args.image, args.target, chunk_size=args.chunk_size, on_progress=bar.update))
    finally:
        bar.close()
    return 0


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"
