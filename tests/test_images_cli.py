"""``dacstyle pull / images / push``: in process through the parser, and once in a subprocess."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from dacstyle.cli import images as images_cli
from dacstyle.errors import DacstyleError, ImageNotFoundError
from dacstyle.images import hash_file



def _run(argv: list[str]) -> int:
    """Parse with a parser holding only our subcommands, run the handler (errors propagate)."""
    parser = argparse.ArgumentParser(prog="dacstyle")
    images_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_help_of_every_subcommand(capsys):
    for argv in (["pull"], ["images"], ["images", "list"], ["images", "add"], ["images", "rm"],
                 ["images", "prune"], ["push"]):
        with pytest.raises(SystemExit) as info:
            _run([*argv, "--help"])
        assert info.value.code == 0
        assert "usage: dacstyle" in capsys.readouterr().out


def test_pull_prints_the_cached_path(images_env, file_server, big_sif, capsys):
    url = file_server.add("big.sif", big_sif)
    digest = hash_file(big_sif)
    assert _run(["pull", url, "--sha256", digest]) == 0
    path = capsys.readouterr().out.strip()
    assert path == str(images_env.blob_path(digest))
    assert _run(["pull", url, "--offline"]) == 0
    assert capsys.readouterr().out.strip() == path
    with pytest.raises(ImageNotFoundError, match="offline"):
        _run(["pull", file_server.url("other.sif"), "--offline"])
    assert len(file_server.requests) == 1


def test_images_list_add_rm_prune(images_env, sif_file, capsys):
    assert _run(["images"]) == 0
    assert "no cached images" in capsys.readouterr().err
    assert _run(["images", "add", str(sif_file), "--ref", "sigmoid@0.1.0"]) == 0
    digest = hash_file(sif_file)
    assert capsys.readouterr().out.strip() == str(images_env.blob_path(digest))
    assert _run(["pull", "sigmoid@0.1.0"]) == 0
    capsys.readouterr()
    assert _run(["images", "list"]) == 0
    out = capsys.readouterr().out
    assert f"sha256:{digest[:12]}" in out and "sigmoid@0.1.0" in out and "40.0 KiB" in out
    assert _run(["images", "list", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["sha256"] == digest and entry["refs"] == ["sigmoid@0.1.0"]
    (images_env.root / "tmp" / "leftover.part").write_bytes(b"x")
    assert _run(["images", "prune"]) == 0
    assert "leftover.part" in capsys.readouterr().out
    assert _run(["images", "rm", "sigmoid@0.1.0"]) == 0
    assert f"removed sha256:{digest}" in capsys.readouterr().out
    with pytest.raises(DacstyleError):
        _run(["images", "rm", "sigmoid@0.1.0"])


def test_push_then_pull_in_a_subprocess(images_env, registry, sif_file, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DACSTYLE_")}
    env.update(DACSTYLE_CACHE=str(tmp_path / "subcache"), DACSTYLE_PROGRESS="never")
    target = f"oras://{registry.host}/dacstyle/cli:1"

    def cli(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dacstyle.cli", *argv], capture_output=True, text=True,
                              env=env, timeout=120)

    pushed = cli("push", str(sif_file), target)
    assert pushed.returncode == 0, pushed.stderr
    pinned = pushed.stdout.strip()
    pulled = cli("pull", pinned)
    assert pulled.returncode == 0, pulled.stderr
    assert hash_file(pulled.stdout.strip()) == hash_file(sif_file)
    missing = cli("pull", f"oras://{registry.host}/dacstyle/cli:nope")
    assert missing.returncode == 1 and "dacstyle: error:" in missing.stderr and "not found" in missing.stderr
    offline = cli("pull", "--offline", target)
    assert offline.returncode == 1 and "offline" in offline.stderr
