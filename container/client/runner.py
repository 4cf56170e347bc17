"""RemoteRunner: a benchmark in a container, handed back as local Python objects.

::

    with RemoteRunner(SigmoidBenchmark().set_seed(42)) as runner:
        env = runner.get_environment()          # a gymnasium.Env proxy
        results = runner.run(agent, number_of_episodes=10)

``run`` writes a run folder on the host: ``manifest.json`` (benchmark spec, seeds,
versions of both sides, runtime, image) and ``episodes.jsonl`` (one line per
episode, with its steps), plus the server's log.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from dacstyle.benchmarks.spec import Benchmark
from dacstyle.config import config
from dacstyle.errors import BenchmarkError
from dacstyle.runtimes import Bind, Runtime, get_runtime
from dacstyle.runtimes.base import GRADER_DIR_INSIDE

from ..protocol import versions
from .proxies import RemoteEnvironment, RemoteObject
from .server import Server

__all__ = ["RemoteRunner", "RunResults", "to_jsonable"]

log = logging.getLogger(__name__)


def to_jsonable(value: Any) -> Any:
    """A best-effort plain-JSON copy of a value, for logs and manifests."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


@dataclass
class RunResults:
    """What ``RemoteRunner.run`` returns: per-episode return, length and wall time."""

    benchmark: str
    episodes: list[dict[str, Any]]
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def returns(self) -> list[float]:
        return [float(e["return"]) for e in self.episodes]

    @property
    def lengths(self) -> list[int]:
        return [int(e["length"]) for e in self.episodes]

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns)) if self.episodes else float("nan")

    def table(self) -> str:
        """A plain-text table, one row per episode and a mean row."""
        rows = [f"{'episode':>7}  {'return':>10}  {'length':>6}  {'wall s':>8}"]
        for e in self.episodes:
            rows.append(f"{e['episode']:>7}  {e['return']:>10.4f}  {e['length']:>6}  {e['wall_time_s']:>8.3f}")
        rows.append(f"{'mean':>7}  {self.mean_return:>10.4f}  {np.mean(self.lengths) if self.episodes else 0:>6.1f}")
        return "\n".join(rows)


class RemoteRunner:
    """Start a benchmark's server (in its image, through a runtime) and hand back proxies."""

    def __init__(
        self,
        benchmark: Benchmark,
        runtime: str | Runtime | None = None,
        image: str | Path | None = None,
        *,
        binds: Iterable[str | Bind] = (),
        env: dict[str, str] | None = None,
        gpu: bool = False,
        call_timeout: float | None = None,
        start_timeout: float | None = None,
        runs_dir: str | Path | None = None,
    ) -> None:
        if not isinstance(benchmark, Benchmark):
            raise BenchmarkError(f"RemoteRunner needs a Benchmark, not {type(benchmark).__name__}")
        self.benchmark = benchmark
        self.runtime = get_runtime(runtime or config.runtime)
        self.image_ref = image if image is not None else benchmark.image
        self.binds = [b if isinstance(b, Bind) else Bind.parse(b) for b in binds]
        self.env = dict(env or {})
        self.gpu = gpu
        self.call_timeout = call_timeout if call_timeout is not None else config.call_timeout
        self.start_timeout = start_timeout if start_timeout is not None else config.start_timeout
        self.runs_dir = Path(runs_dir) if runs_dir is not None else Path(config.runs)
        self.image: Path | None = None
        self._image_record: dict[str, Any] | None = None
        self.grader: RemoteObject | None = None
        self._server: Server | None = None
        self._grader_server: Server | None = None
        self._spec = benchmark
        log.info("RemoteRunner(%s): runtime %s", benchmark.name, self.runtime.name)

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> "RemoteRunner":
        """Resolve the image, start the server(s) and complete the handshake (idempotent).

        A benchmark with a ``grader`` gets it first, in its own container; the
        main server then sees only the grader's agent endpoint.
        """
        if self._server is not None:
            return self
        if self.runtime.needs_image:
            self.image = self._resolve_image()
        binds, paths = self._binds(self.benchmark, self.binds)
        try:
            if self.benchmark.grader is not None:
                grader = Benchmark.from_json(json.dumps(self.benchmark.grader))
                grader_binds, grader_paths = self._binds(grader, [])
                self._grader_server = self._start_server(grader_binds, agent=True)
                self.grader = self._grader_server.create(grader.resolved(grader_paths))  # type: ignore[assignment]
                endpoint = Bind(str(self._grader_server.run.path / "agent"), GRADER_DIR_INSIDE, readonly=False)
                binds.append(endpoint)
                paths["grader"] = self.runtime.path_inside(endpoint)
            self._spec = self.benchmark.resolved(paths)
            self._server = self._start_server(binds)
        except BaseException:
            self.close()
            raise
        return self

    def _binds(self, spec: Benchmark, extra: list[Bind]) -> tuple[list[Bind], dict[str, str]]:
        named = {name: Bind.parse(text) for name, text in spec.binds.items()}
        paths = {f"bind:{name}": self.runtime.path_inside(bind) for name, bind in named.items()}
        return [*extra, *named.values()], paths

    def _start_server(self, binds: list[Bind], agent: bool = False) -> Server:
        return Server.start(
            self.runtime,
            image=self.image,
            binds=binds,
            env=self.env,
            gpu=self.gpu,
            agent=agent,
            start_timeout=self.start_timeout,
            call_timeout=self.call_timeout,
        )

    def _resolve_image(self) -> Path:
        from dacstyle.images.default import image_for

        return image_for(self.benchmark, self.image_ref)

    @property
    def server(self) -> Server:
        """The running server (starts it on first use)."""
        self.start()
        assert self._server is not None
        return self._server

    def close(self) -> None:
        """Stop the server(s) and remove their run folders; results and logs stay (idempotent)."""
        servers = [self._server, self._grader_server]
        self._server = self._grader_server = None
        self.grader = None
        for server in servers:
            if server is not None:
                server.close()

    def __enter__(self) -> "RemoteRunner":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- proxies -------------------------------------------------------------------
    def get_environment(self) -> RemoteEnvironment:
        """A new gymnasium.Env proxy of the benchmark's environment."""
        if not self.benchmark.is_environment:
            raise BenchmarkError(f"{self.benchmark.name!r} serves an object; use get_object()")
        env = self.server.create(self._spec)
        assert isinstance(env, RemoteEnvironment)
        return env

    def get_object(self) -> RemoteObject:
        """A new proxy of the benchmark's object, with exactly its served methods."""
        if self.benchmark.is_environment:
            raise BenchmarkError(f"{self.benchmark.name!r} serves an environment; use get_environment()")
        obj = self.server.create(self._spec)
        assert isinstance(obj, RemoteObject)
        return obj

    # -- running -------------------------------------------------------------------
    def run(self, agent: Any, number_of_episodes: int = 1) -> RunResults:
        """Run ``agent`` for some episodes on a fresh remote environment; log them to a run folder."""
        from dacstyle.agents import as_agent
        from dacstyle.agents.loop import iter_episodes

        if number_of_episodes < 1:
            raise ValueError("number_of_episodes must be at least 1")
        agent = as_agent(agent)
        folder = self._new_run_folder()
        env = self.get_environment()
        started = time.time()
        manifest = self._manifest(started, number_of_episodes)
        _write_json(folder / "manifest.json", manifest)
        steps: list[dict[str, Any]] = []

        def on_step(episode: int, t: int, action: Any, reward: Any, terminated: bool, truncated: bool, info: Any) -> None:
            steps.append({"t": t, "action": to_jsonable(action), "reward": to_jsonable(reward),
                          "terminated": bool(terminated), "truncated": bool(truncated), "info": to_jsonable(info)})

        episodes: list[dict[str, Any]] = []
        try:
            with open(folder / "episodes.jsonl", "w") as log_file:
                for record in iter_episodes(env, agent, number_of_episodes, seed=self.benchmark.seed, on_step=on_step):
                    record = {**to_jsonable(record), "steps": steps[:]}
                    steps.clear()
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                    episodes.append(record)
        finally:
            env.close()
            manifest["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat()
            manifest["episodes_completed"] = len(episodes)
            _write_json(folder / "manifest.json", manifest)
            self._copy_server_log(folder)
        summary = [{k: v for k, v in e.items() if k != "steps"} for e in episodes]
        extra = {}
        if self.grader is not None:
            extra["grade"] = self._grade(folder)
        return RunResults(self.benchmark.name, summary, folder, extra)

    def _grade(self, folder: Path) -> dict[str, Any]:
        """Grade the task's submission on the host side, after the episode."""
        assert self.grader is not None
        if "submission" not in self.benchmark.binds:
            raise BenchmarkError(f"{self.benchmark.name!r} has a grader but no 'submission' bind to grade")
        submission = Path(Bind.parse(self.benchmark.binds["submission"]).src) / "submission.csv"
        if submission.is_file():
            report = self.grader.grade(submission.read_bytes())  # type: ignore[attr-defined]
        else:
            report = {"valid": False, "score": None, "errors": [{"code": "missing", "message": "no submission.csv"}]}
        _write_json(folder / "grade.json", to_jsonable(report))
        return report

    def _new_run_folder(self) -> Path:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        folder = self.runs_dir / f"{self.benchmark.name}-{stamp}-{secrets.token_hex(2)}"
        folder.mkdir(parents=True, exist_ok=False)
        return folder

    def _manifest(self, started: float, episodes: int) -> dict[str, Any]:
        if self.image is not None and self._image_record is None:
            from dacstyle.images.default import describe_image

            self._image_record = describe_image(self.image)  # hashes a local file: once per runner
        return {
            "benchmark": json.loads(self.benchmark.to_json()),
            "seed": self.benchmark.seed,
            "episodes_requested": episodes,
            "started": _dt.datetime.fromtimestamp(started, _dt.timezone.utc).isoformat(),
            "runtime": self.runtime.describe(),
            "image": self._image_record,
            "host": versions(),
            "server": self.server.hello,
            "config": to_jsonable({k: str(v) if isinstance(v, Path) else v for k, v in config.as_dict().items()}),
        }

    def _copy_server_log(self, folder: Path) -> None:
        if self._server is not None and self._server.run.log_path.exists():
            shutil.copyfile(self._server.run.log_path, folder / "server.log")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
