"""Many processes pulling one image at once download it once (the cache's file lock)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dacstyle.images import hash_file


_CHILD = """
import sys
from dacstyle.images import pull
print("ready", flush=True)
print(pull(sys.argv[1]).path, flush=True)
"""


@pytest.mark.slow
def test_eight_processes_download_once(images_env, file_server, big_sif):
    url = file_server.add("big.sif", big_sif)
    # the first body GET is parked until all 8 children are running: the others meet the lock or the cache
    file_server.fail_next("big.sif", "gate")
    env = {**os.environ, "DACSTYLE_CACHE": str(images_env.root), "DACSTYLE_PROGRESS": "never"}
    children = [subprocess.Popen([sys.executable, "-c", _CHILD, url], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env) for _ in range(8)]
    try:
        for child in children:  # readiness handshake: each child prints "ready" just before pull()
            assert child.stdout.readline().strip() == "ready"
        assert file_server.gated.wait(30), "no child reached the server"
        file_server.gate.set()
        results = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(10)
    paths = {out.strip() for out, _ in results}
    assert all(child.returncode == 0 for child in children), [err for _, err in results]
    assert len(paths) == 1
    (path,) = paths
    assert hash_file(path) == hash_file(big_sif)
    assert len(file_server.gets("big.sif")) == 1, "exactly one download of the body"

