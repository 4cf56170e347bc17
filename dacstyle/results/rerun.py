"""Re-run a run from its manifest and say whether it came out the same.

The benchmark, the agent (``entry_point(env, **config)``), the runtime and the
image (by digest) are rebuilt from ``manifest.json``; the episodes run again into
a fresh run folder, and :func:`compare_runs` compares the two folders step by
step: observations by their bytes, actions, rewards and flags.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import DigestMismatchError, ImageNotFoundError, RunFolderError
from .log import read_episodes, read_manifest

__all__ = ["Comparison", "compare_runs", "rerun", "describe_agent", "build_agent", "run_image"]

_COMPARED = ("action", "obs", "reward", "terminated", "truncated")


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing two runs: ``identical``, what was compared, the first difference."""

    identical: bool
    compared: str
    difference: str = ""
    rerun_path: Path | None = None

    def __str__(self) -> str:
        if self.identical:
            return f"identical ({self.compared})"
        return f"different: {self.difference} ({self.compared})"


def describe_agent(agent: Any) -> dict[str, Any]:
    """What the manifest records about an agent; ``entry_point`` is None when it cannot be rebuilt."""
    describe = getattr(agent, "describe", None)
    if callable(describe):
        record = dict(describe())
        record.setdefault("config", {})
        record.setdefault("seed", None)
        return record
    inner = getattr(agent, "policy", agent)
    named = inner if hasattr(inner, "__qualname__") else type(inner)  # a function, else its class
    return {"entry_point": None, "config": None, "seed": getattr(inner, "seed", None),
            "class": f"{named.__module__}:{named.__qualname__}", "repr": repr(agent)[:200]}


def build_agent(record: dict[str, Any] | None, env: Any) -> Any:
    """Rebuild an agent from its manifest record: ``entry_point(env, **config)``."""
    from ..benchmarks.spec import load_entry_point

    _check_rebuildable(record)
    assert record is not None
    return load_entry_point(record["entry_point"])(env, **(record.get("config") or {}))


def _check_rebuildable(record: dict[str, Any] | None) -> None:
    if not record or not record.get("entry_point"):
        what = (record or {}).get("class", "an agent")
        raise RunFolderError(f"the run's agent ({what}) cannot be rebuilt: it has no describe(); "
                             "only agents that describe themselves (the shipped baselines) can be re-run")


def run_image(record: dict[str, Any] | None) -> Path | None:
    """The run's image, checked against its recorded sha256 (pulled again if it was a reference)."""
    from ..images.cache import ImageCache, hash_file
    from ..images.pull import resolve_image

    if not record:
        return None
    sha256, ref = record["sha256"], record.get("reference")
    if ref and "://" in ref:
        try:
            return resolve_image(ref, sha256=sha256)
        except DigestMismatchError as exc:
            raise DigestMismatchError(f"{ref} now serves another image than the run used (sha256 {sha256}): "
                                      f"refusing to re-run ({exc})") from exc
    path = Path(record["path"])
    if not path.is_file():
        cached = ImageCache().get(sha256)
        if cached is None:
            raise ImageNotFoundError(f"the run's image is gone: {path} (sha256 {sha256}) is neither on disk "
                                     "nor in the image cache")
        return cached.path
    actual = hash_file(path)
    if actual != sha256:
        raise DigestMismatchError(f"{path} has sha256 {actual}, but the run used {sha256}: "
                                  "refusing to re-run in a different image")
    return path


def rerun(folder: Path | str, *, runtime: str | None = None, out: Path | str | None = None,
          progress: bool | None = False) -> Comparison:
    """Re-run the run in ``folder`` and compare it with the logged one.

    The log is checked against the manifest's digests before anything runs. The
    new run folder goes under ``out`` (kept) or a temporary folder (removed).
    """
    from dacstyle.benchmarks.spec import Benchmark
    from dacstyle.container.client.runner import RemoteRunner

    folder = Path(folder)
    manifest = read_manifest(folder)
    episodes = sum(1 for _ in read_episodes(folder, manifest, with_steps=False))
    if episodes == 0:
        raise RunFolderError(f"{folder} has no completed episode to re-run")
    _check_rebuildable(manifest.get("agent"))  # before any container starts
    bench = Benchmark.from_json(json.dumps(manifest["benchmark"]))
    image = run_image(manifest.get("image"))
    runtime = runtime or (manifest.get("runtime") or {}).get("name")
    with tempfile.TemporaryDirectory(prefix="dacstyle-rerun-") as scratch:
        runs_dir = Path(out) if out is not None else Path(scratch)
        with RemoteRunner(bench, runtime=runtime, image=image, runs_dir=runs_dir) as runner:
            env = runner.get_environment()
            agent = build_agent(manifest.get("agent"), env)
            env.close()
            again = runner.run(agent, episodes, log_steps=manifest.get("log_steps", True), progress=progress)
        result = compare_runs(folder, again.path)
        kept = again.path if out is not None else None
        difference = result.difference
        if difference and manifest.get("seed") is None:
            difference += "; the benchmark had no seed, so its runs cannot repeat"
        return Comparison(result.identical, result.compared, difference, kept)


def compare_runs(original: Path | str, again: Path | str) -> Comparison:
    """Compare two run folders episode by episode and step by step; the first difference wins."""
    man_a, man_b = read_manifest(original), read_manifest(again)
    log_steps = man_a.get("log_steps", True)
    compared = _what_is_compared(log_steps)
    digests_a, digests_b = man_a.get("episodes") or [], man_b.get("episodes") or []
    if len(digests_a) != len(digests_b):
        return Comparison(False, compared, f"{len(digests_a)} episodes logged, {len(digests_b)} re-run")
    pairs = zip(read_episodes(original, man_a), read_episodes(again, man_b))
    for index, (a, b) in enumerate(pairs):
        difference = _episode_difference(index, a, b, digests_a[index], digests_b[index])
        if difference:
            return Comparison(False, compared, difference)
    return Comparison(True, compared)


def _what_is_compared(log_steps: Any) -> str:
    if log_steps is True:
        return "every step compared: observation bytes, action, reward, flags"
    if log_steps is False:
        return ("steps were not logged: compared episode returns and lengths, "
                "and a digest of all steps (a difference cannot be placed at a step)")
    return (f"every {log_steps}th step compared (observation bytes, action, reward, flags), "
            "the others through a digest of all steps")


def _episode_difference(index: int, a: dict[str, Any], b: dict[str, Any], digest_a: dict[str, Any],
                        digest_b: dict[str, Any]) -> str:
    where = f"episode {index}"
    if a.get("reset_obs") != b.get("reset_obs"):
        return f"{where}, reset: the observation's bytes differ"
    for step_a, step_b in _paired_steps(a.get("steps") or [], b.get("steps") or []):
        for key in _COMPARED:
            if json.dumps(step_a.get(key)) != json.dumps(step_b.get(key)):
                if key == "obs":
                    return f"{where}, step {step_a['t']}: the observation's bytes differ"
                return f"{where}, step {step_a['t']}: {key} {step_a.get(key)!r} logged, {step_b.get(key)!r} re-run"
    if a["length"] != b["length"]:
        return f"{where}: length {a['length']} logged, {b['length']} re-run"
    if json.dumps(a["return"]) != json.dumps(b["return"]):
        return f"{where}: return {a['return']!r} logged, {b['return']!r} re-run"
    if digest_a.get("steps") != digest_b.get("steps"):
        return f"{where}: a step that was not logged differs (the digests of all steps differ)"
    return ""


def _paired_steps(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> Iterator[tuple[dict, dict]]:
    by_t = {step["t"]: step for step in b}
    for step in a:
        yield step, by_t.get(step["t"], {"t": step["t"]})
