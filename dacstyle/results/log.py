"""The episode log of a run folder: what is written per step, and its digests.

``episodes.jsonl`` holds one line per episode; with ``log_steps`` True every step
is on it, with an int N every N-th step (``t % N == 0``), with False none. A
step is ``{t, action, obs, reward, terminated, truncated, info}`` where ``obs`` is
a digest of the observation's bytes (dtype and shape included), so a logged step
stays small whatever the observation.

Two digests per episode go into the manifest: ``steps`` covers every step's
compared fields (reset observation, then t, action, obs, reward and flags for
each step; ``info`` is not compared) whether or not they were logged, so two runs
can be compared without logs; ``line`` is the digest of the exact line written,
so an edited log is caught when it is read back.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import secrets
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from dacstyle import codec

from ..errors import RunFolderError

__all__ = ["LogSteps", "EpisodeLog", "observation_digest", "read_episodes", "read_manifest", "check_log_steps",
           "new_run_folder", "write_manifest"]

LogSteps = bool | int
"""``True`` (every step), ``False`` (none) or N (every N-th step)."""

DIGEST = "blake2b-128"


def _hasher() -> Any:
    return hashlib.blake2b(digest_size=16)


def observation_digest(value: Any) -> str:
    """A digest of an observation's bytes, with dtypes, shapes and nesting (dicts, tuples) included."""
    h = _hasher()
    _feed(h, value)
    return h.hexdigest()


def _feed(h: Any, value: Any) -> None:
    if isinstance(value, dict):
        h.update(b"{%d" % len(value))
        for key in sorted(value, key=str):
            h.update(str(key).encode() + b":")
            _feed(h, value[key])
    elif isinstance(value, (tuple, list)):
        h.update(b"(%d" % len(value))
        for item in value:
            _feed(h, item)
    else:
        array = np.asarray(value)
        if array.dtype == object:
            h.update(b"o" + repr(value).encode())
            return
        h.update(f"{array.dtype.str}{array.shape}".encode())
        h.update(np.ascontiguousarray(array).tobytes())


def check_log_steps(log_steps: Any) -> LogSteps:
    """``log_steps`` as given, or a ValueError saying what is allowed."""
    if isinstance(log_steps, bool) or (isinstance(log_steps, int) and log_steps >= 1):
        return log_steps
    raise ValueError(f"log_steps must be True, False or a positive int (every N-th step), not {log_steps!r}")


class EpisodeLog:
    """Collects one episode at a time (``on_reset``/``on_step`` hooks) and writes its line."""

    def __init__(self, path: Path, log_steps: LogSteps = True) -> None:
        self.log_steps = check_log_steps(log_steps)
        self.every = 1 if log_steps is True else (0 if log_steps is False else int(log_steps))
        self._jsonable = codec.encode  # the channel's own lossless JSON form: one codec, all the way
        self._file = open(path, "w")
        self.digests: list[dict[str, Any]] = []
        self._steps: list[dict[str, Any]] = []
        self._hash = _hasher()
        self._reset_obs = ""

    def on_reset(self, episode: int, observation: Any, info: dict) -> None:
        """Start an episode: its reset observation opens the steps digest."""
        self._reset_obs = observation_digest(observation)
        self._hash = _hasher()
        self._hash.update(self._reset_obs.encode())
        self._steps = []

    def on_step(self, episode: int, t: int, action: Any, reward: float, terminated: bool, truncated: bool,
                info: Any, observation: Any) -> None:
        """Digest every step; keep the ones ``log_steps`` asks for."""
        step = {"t": t, "action": self._jsonable(action), "obs": observation_digest(observation),
                "reward": reward, "terminated": terminated, "truncated": truncated}
        self._hash.update(compared_json(step).encode())
        if self.every and t % self.every == 0:
            step["info"] = self._jsonable(info)
            self._steps.append(step)

    def end_episode(self, record: dict[str, Any]) -> dict[str, Any]:
        """Write the episode's line (the loop's ``record`` plus steps) and remember its digests."""
        line_record = {**self._jsonable(record), "reset_obs": self._reset_obs}
        if self.every:
            line_record["steps"] = self._steps
        line = json.dumps(line_record)
        self._file.write(line + "\n")
        self._file.flush()
        self.digests.append({"return": line_record["return"], "length": line_record["length"],
                             "steps": self._hash.hexdigest(), "line": line_digest(line)})
        self._steps = []
        return line_record

    def close(self) -> None:
        """Close the log file (idempotent)."""
        self._file.close()


def compared_json(step: dict[str, Any]) -> str:
    """The fields of a step that two runs must share, as canonical JSON."""
    fields = [step["t"], step["action"], step["obs"], step["reward"], step["terminated"], step["truncated"]]
    return json.dumps(fields, separators=(",", ":"))


def line_digest(line: str) -> str:
    """The digest of one ``episodes.jsonl`` line (without its newline)."""
    h = _hasher()
    h.update(line.encode())
    return h.hexdigest()


def new_run_folder(runs_dir: Path, name: str) -> Path:
    """A fresh run folder ``RUNS/NAME-YYYYmmdd-HHMMSS-XXXX`` (never an existing one)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = runs_dir / f"{name}-{stamp}-{secrets.token_hex(2)}"
    folder.mkdir(parents=True, exist_ok=False)
    return folder


def write_manifest(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically (a reader never sees half a manifest)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def read_manifest(folder: Path | str) -> dict[str, Any]:
    """``folder/manifest.json``, or a RunFolderError saying why it cannot be read."""
    path = Path(folder) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise RunFolderError(f"{folder} is not a run folder: no manifest.json") from exc
    except ValueError as exc:
        raise RunFolderError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(manifest, dict) or "benchmark" not in manifest:
        raise RunFolderError(f"{path} is not a run manifest (no 'benchmark')")
    return manifest


def read_episodes(folder: Path | str, manifest: dict[str, Any] | None = None,
                  with_steps: bool = True) -> Iterator[dict[str, Any]]:
    """Each episode's record from ``episodes.jsonl``, checked against the manifest's digests.

    Raises RunFolderError on a line that is not JSON, an episode the manifest does
    not list, or a line whose digest differs from the manifest's (an edited log).
    """
    folder = Path(folder)
    manifest = manifest if manifest is not None else read_manifest(folder)
    if "episodes" not in manifest:
        raise RunFolderError(f"{folder} was written by a dacstyle without episode digests: its log cannot be checked")
    digests = manifest["episodes"]
    try:
        handle = open(folder / "episodes.jsonl")
    except FileNotFoundError as exc:
        raise RunFolderError(f"{folder} has no episodes.jsonl") from exc
    count = 0
    with handle:
        for index, line in enumerate(handle):
            count = index + 1
            line = line.rstrip("\n")
            if index >= len(digests):
                raise RunFolderError(f"{folder}: episode {index} is in episodes.jsonl but not in the manifest")
            if line_digest(line) != digests[index]["line"]:
                raise RunFolderError(f"{folder}: episode {index} in episodes.jsonl does not match the manifest's "
                                     "digest (the log was edited or is corrupt)")
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise RunFolderError(f"{folder}: episode {index} is not JSON: {exc}") from exc
            if not with_steps:
                record.pop("steps", None)
            yield record
    if count < len(digests):
        raise RunFolderError(f"{folder}: episodes.jsonl has {count} episodes, the manifest lists {len(digests)}")
