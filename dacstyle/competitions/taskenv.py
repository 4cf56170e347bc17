"""The task environment in which an LLM agent works on a competition.

``TaskEnv`` is a :class:`gymnasium.Env` with :class:`~gymnasium.spaces.Text`
observations and actions. ``reset()`` returns the instructions. Each action is
one of:

* ``validate`` — check ``SUBMISSION_DIR/submission.csv`` with the validator;
* ``submit`` — the same check, then the episode ends (the host grades later);
* text starting with ``#!sh`` and a newline — the rest is run by ``/bin/sh -c``;
* anything else — Python code, written to ``WORKSPACE/.actions/step_NNN.py``
  and run with this interpreter.

Code runs in the workspace under ``time_limit`` seconds (enforced from outside,
see :mod:`dacstyle.competitions.sandbox`) with a cleared environment that holds
only ``PATH``, ``HOME`` (the workspace), ``DACSTYLE_PUBLIC_DIR``,
``DACSTYLE_WORKSPACE_DIR`` and ``DACSTYLE_SUBMISSION_DIR``. The observation is
its output (first ``output_limit`` bytes), exit status and duration; ``info``
holds the same as fields. The reward is always 0: the score is graded by the
host after the episode, never shown to the agent.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import string
import sys
import tempfile
from pathlib import Path
from typing import Any

import gymnasium as gym
from gymnasium import spaces

from ..config import config
from ..errors import DacstyleError, SubmissionError
from .sandbox import run_limited
from .sources import read_submission_file

__all__ = ["TaskEnv", "SHELL_PREFIX", "VALIDATE", "SUBMIT", "CHARSET"]

log = logging.getLogger(__name__)

SHELL_PREFIX = "#!sh\n"
VALIDATE = "validate"
SUBMIT = "submit"
CHARSET = frozenset(string.printable)
"""Printable ASCII with tab, newline, carriage return, vertical tab and form feed."""

Validator = Any  # a callable or an object with validate(submission) -> dict


def _printable(text: str) -> str:
    """Map text into CHARSET: non-ASCII as escapes, other control characters as '?'."""
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    return "".join(ch if ch in CHARSET else "?" for ch in text)


class TaskEnv(gym.Env):
    """A gymnasium env whose actions are code run in a workspace, for LLM agents."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        public_dir: str | Path,
        workspace_dir: str | Path | None,
        submission_dir: str | Path,
        *,
        time_limit: float = 60.0,
        output_limit: int = 16 * 1024,
        validator: Validator | None = None,
        max_steps: int = 30,
        info: dict[str, Any] | None = None,
        max_action_length: int = 100_000,
        max_observation_length: int = 200_000,
    ) -> None:
        self.public_dir = Path(public_dir).resolve()
        # None: a private folder in the temporary folder (in a container, its sized /tmp), removed on close
        self._own_workspace = workspace_dir is None
        self.workspace_dir = Path(tempfile.mkdtemp(prefix="workspace-") if workspace_dir is None else workspace_dir).resolve()
        self.submission_dir = Path(submission_dir).resolve()
        self.time_limit = float(time_limit)
        self.output_limit = int(output_limit)
        self.max_steps = int(max_steps)
        self._validator = validator
        self._task_info = dict(info or {})
        self.action_space = spaces.Text(max_length=max_action_length, min_length=0, charset=CHARSET)
        self.observation_space = spaces.Text(max_length=max_observation_length, min_length=0, charset=CHARSET)
        self._steps = 0
        self._done = True

    # -- gymnasium API -------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        """Start an episode: make the folders, drop a stale submission, return the instructions."""
        super().reset(seed=seed)
        self.workspace_dir.mkdir(parents=True, exist_ok=True)
        self.submission_dir.mkdir(parents=True, exist_ok=True)
        (self.submission_dir / "submission.csv").unlink(missing_ok=True)
        self._steps = 0
        self._done = False
        return self._clip(self.instructions()), {"step": 0, "kind": "reset"}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        """Run one action; see the module docstring for the action forms."""
        if self._done:
            raise DacstyleError("the episode is over (or never started): call reset() first")
        if not isinstance(action, str):
            raise TypeError(f"an action is a str, not {type(action).__name__}")
        self._steps += 1
        command = action.strip()
        if command in (VALIDATE, SUBMIT):
            result = self._validate()
            info = {"step": self._steps, "kind": command, "validation": result}
            obs = "validation: " + json.dumps(result, indent=1)
            terminated = command == SUBMIT
            if terminated:
                obs += "\nsubmitted: the episode is over; the host grades the submission."
        else:
            info = self._run(action)
            obs = self._describe_run(info)
            terminated = False
        truncated = not terminated and self._steps >= self.max_steps
        self._done = terminated or truncated
        return self._clip(obs), 0.0, terminated, truncated, info

    def close(self) -> None:
        """End the episode; a private workspace is removed (every action's processes are already gone)."""
        self._done = True
        if self._own_workspace:
            shutil.rmtree(self.workspace_dir, ignore_errors=True)

    # -- instructions ---------------------------------------------------------

    def instructions(self) -> str:
        """What the agent reads first: the task, the files, and how to act and submit."""
        try:
            description = (self.public_dir / "description.md").read_text(encoding="utf-8")
        except OSError:
            description = "(no description.md)"
        listing = []
        for path in sorted(self.public_dir.rglob("*")):
            if path.is_file():
                listing.append(f"  {path.relative_to(self.public_dir)} ({path.stat().st_size} bytes)")
        parts = [description.rstrip(), ""]
        if self._task_info:
            parts += ["## Competition metadata", json.dumps(self._task_info, indent=1, sort_keys=True), ""]
        parts += [
            "## Your environment",
            f"Public data (read-only): {self.public_dir}  (env DACSTYLE_PUBLIC_DIR)",
            *listing,
            f"Workspace (writable, your working directory): {self.workspace_dir}  (env DACSTYLE_WORKSPACE_DIR)",
            f"Write your predictions to {self.submission_dir / 'submission.csv'}  (env DACSTYLE_SUBMISSION_DIR)",
            "",
            "## How to act",
            "Each action is one of:",
            "- Python code: it is saved to a file and run with Python in the workspace.",
            f"- A shell script: start the action with the line '{SHELL_PREFIX.strip()}'.",
            f"- '{VALIDATE}': check submission.csv against the format rules (no score is given).",
            f"- '{SUBMIT}': check it and end the episode; it is graded afterwards.",
            f"Every code action may run at most {self.time_limit:g} s; only the first "
            f"{self.output_limit} bytes of its output are shown. Files persist between actions.",
            f"You have {self.max_steps} actions in total.",
        ]
        return "\n".join(parts)

    # -- running code --------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(self.workspace_dir),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "DACSTYLE_PUBLIC_DIR": str(self.public_dir),
            "DACSTYLE_WORKSPACE_DIR": str(self.workspace_dir),
            "DACSTYLE_SUBMISSION_DIR": str(self.submission_dir),
        }

    def _run(self, action: str) -> dict[str, Any]:
        if action.startswith(SHELL_PREFIX):
            kind, argv = "shell", ["/bin/sh", "-c", action[len(SHELL_PREFIX) :]]
        else:
            actions = self.workspace_dir / ".actions"
            actions.mkdir(exist_ok=True)
            script = actions / f"step_{self._steps:03d}.py"
            script.write_text(action, encoding="utf-8")
            kind, argv = "python", [sys.executable, str(script)]
        result = run_limited(
            argv,
            cwd=self.workspace_dir,
            env=self._environment(),
            time_limit=self.time_limit,
            output_limit=self.output_limit,
        )
        if not result.subreaper:
            log.warning("not a child subreaper here: processes that escaped the action may survive it")
        return {
            "step": self._steps,
            "kind": kind,
            "output": _printable(result.output),
            "exit_code": result.exit_code,
            "timed_out": result.timed_out,
            "duration_s": round(result.duration_s, 3),
            "output_bytes": result.output_bytes,
            "truncated": result.truncated,
            "leftovers_killed": result.leftovers_killed,
        }

    def _describe_run(self, info: dict[str, Any]) -> str:
        lines = [info["output"].rstrip("\n")] if info["output"] else []
        if info["truncated"]:
            lines.append(f"[output truncated: showing {self.output_limit} of {info['output_bytes']} bytes]")
        if info["timed_out"]:
            lines.append(f"[killed: the time limit of {self.time_limit:g} s was reached]")
        if info["leftovers_killed"]:
            lines.append(f"[{info['leftovers_killed']} background process(es) left running were killed]")
        lines.append(f"[exit status {info['exit_code']}, {info['duration_s']:.2f} s]")
        return "\n".join(lines)

    # -- validation ----------------------------------------------------------

    def _validate(self) -> dict[str, Any]:
        path = self.submission_dir / "submission.csv"
        if not os.path.lexists(path):
            return {"valid": False, "errors": [{"code": "no_submission", "message": f"{path} does not exist"}]}
        try:  # a regular file inside the submission folder only: no FIFO, no symlink followed
            data = read_submission_file("submission.csv", self.submission_dir, config.max_submission_bytes)
        except SubmissionError as exc:
            return {"valid": False, "errors": list(exc.errors)}
        if self._validator is None:
            return {"valid": False, "errors": [{"code": "no_validator", "message": "no validator is configured"}]}
        check = getattr(self._validator, "validate", self._validator)
        try:
            raw = check(data)
        except Exception as exc:
            log.warning("validator failed: %s", type(exc).__name__)
            return {"valid": False, "errors": [{"code": "validator_failed", "message": "the validator is unavailable"}]}
        if not isinstance(raw, dict):
            return {"valid": False, "errors": [{"code": "validator_failed", "message": "the validator gave no result"}]}
        # pass on only the two public fields, whatever else a validator returns
        errors = [
            {"code": str(e.get("code", "")), "message": str(e.get("message", ""))}
            for e in (raw.get("errors") or [])
            if isinstance(e, dict)
        ]
        return {"valid": bool(raw.get("valid")) and not errors, "errors": errors}

    def _clip(self, text: str) -> str:
        text = _printable(text)
        limit = self.observation_space.max_length
        if len(text) > limit:
            note = "\n[observation truncated]"
            text = text[: limit - len(note)] + note
        return text
