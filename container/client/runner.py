"""RemoteRunner: a benchmark in a container, handed back as local Python objects.

::

    with RemoteRunner(SigmoidBenchmark().set_seed(42)) as runner:
        env = runner.get_environment()          # a gymnasium.Env proxy
        results = runner.run(agent, number_of_episodes=10)

``run`` writes a run folder on the host: ``manifest.json`` (benchmark spec, seeds,
the agent, versions of both sides, runtime, image, a digest of each episode) and
``episodes.jsonl`` (one line per episode, with its steps as ``log_steps`` asks),
plus the server's log; ``dacstyle rerun`` re-runs it from the manifest.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Iterable

from dacstyle import codec
from dacstyle.benchmarks.spec import Benchmark
from dacstyle.config import config
from dacstyle.errors import BenchmarkError, ClosedError
from dacstyle.results import RunResults
from dacstyle.results.log import new_run_folder, write_manifest
from dacstyle.runtimes import Bind, Runtime, get_runtime
from dacstyle.runtimes.base import COMPANION_DIR_INSIDE

from ..protocol import versions
from .localcode import CODE_INSIDE, LocalModule, code_environment, local_modules
from .envfn import EnvFactory
from .proxies import RemoteEnvironment, RemoteObject
from .server import Server
from .vector import RemoteVectorEnv

__all__ = ["RemoteRunner"]

log = logging.getLogger(__name__)


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
        placement: Any = None,
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
        self.placement = placement if placement is not None else getattr(benchmark, "placement", None)
        self._heartbeat = True  # a Slurm job ends itself once this host stops calling (not for `dacstyle submit`)
        self.image: Path | None = None
        self._image_record: dict[str, Any] | None = None
        self.companions: dict[str, RemoteObject] = {}  # the companions' objects, host side (a grader)
        self._server: Server | None = None
        self._companion_servers: dict[str, Server] = {}
        self._spec = benchmark
        self.local_code: list[LocalModule] = []
        self._server_binds: list[Bind] = []
        self._vector_envs: list[RemoteVectorEnv] = []
        self._closed = False
        log.info("RemoteRunner(%s): runtime %s", benchmark.name, self.runtime.name)

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> "RemoteRunner":
        """Resolve the image, start the server(s) and complete the handshake (idempotent).

        Companions (``spec.companions``) start first, each in its own container; the
        main server then sees only their agent endpoints. With a Slurm placement all
        of them are one job (a heterogeneous one when there are companions).
        """
        if self._server is not None:
            return self
        if self._closed:
            raise ClosedError(f"the runner of {self.benchmark.name!r} is closed; make a new RemoteRunner")
        if self.runtime.needs_image:
            self.image = self._resolve_image()
        binds, paths = self._binds(self.benchmark, self.binds)
        specs = {name: Benchmark.from_json(json.dumps(spec)) for name, spec in self.benchmark.companions.items()}
        try:
            resolved = {}
            for name, spec in specs.items():
                companion_binds, companion_paths = self._binds(spec, [])
                resolved[name] = (spec.resolved(companion_paths), companion_binds)
            self._server_binds = binds
            self._spec = self.benchmark.resolved(paths)  # the companions' folders are known once they start
            if self.placement is not None:
                self._submit(resolved, binds)
                for name in resolved:  # bound in by the job itself (see dacstyle.slurm.jobmain)
                    folder = self._server.server_dir.path / "companion" / name  # type: ignore[union-attr]
                    paths[f"companion:{name}"] = self.runtime.path_inside(Bind(str(folder), f"{COMPANION_DIR_INSIDE}/{name}"))
            else:
                for name, (spec, companion_binds) in resolved.items():
                    server = self._companion_servers[name] = self._start_server(companion_binds, agent=True)
                    self.companions[name] = server.create(spec)  # type: ignore[assignment]
                    endpoint = Bind(str(server.server_dir.path / "agent"), f"{COMPANION_DIR_INSIDE}/{name}", readonly=False)
                    binds.append(endpoint)
                    paths[f"companion:{name}"] = self.runtime.path_inside(endpoint)
                self._server = self._start_server(binds)
            self._spec = self.benchmark.resolved(paths)
        except BaseException:
            self.close()
            raise
        return self

    def _submit(self, companions: dict[str, tuple[Benchmark, list[Bind]]], binds: list[Bind]) -> None:
        """Start the companions and the main server as one Slurm job, then build the companions' objects."""
        from dacstyle.slurm.job import submit_servers

        placements = getattr(self.benchmark, "companion_placements", {})
        requests = [self._request(placements.get(name, self.placement), companion_binds, spec, agent=True)
                    for name, (spec, companion_binds) in companions.items()]
        links = [(index, f"{COMPANION_DIR_INSIDE}/{name}") for index, name in enumerate(companions)]
        requests.append(self._request(self.placement, binds, self._spec, gpu=self.gpu, companions=links))
        servers = submit_servers(self.benchmark.name, requests, self.start_timeout)
        *companion_servers, self._server = servers
        for (name, (spec, _)), server in zip(companions.items(), companion_servers):
            self._companion_servers[name] = server
            self.companions[name] = server.create(spec)  # type: ignore[assignment]

    @classmethod
    def attach(cls, address: str) -> "RemoteRunner":
        """A runner on the server a Slurm job already runs (``"auto:JOBID"``, from ``dacstyle submit``).

        Its proxies work as on a runner of your own; ``close()`` detaches and the job goes on.
        """
        from dacstyle.slurm.job import attach

        kind, _, job_id = address.partition(":")
        if kind != "auto" or not job_id.isdigit():
            raise ValueError(f"attach wants 'auto:JOBID' (a Slurm job id), not {address!r}")
        server, spec = attach(job_id)
        if spec is None:
            server.close()
            raise BenchmarkError(f"job {job_id} does not say which benchmark it serves")
        runner = cls(spec, runtime="process")
        runner.runtime, runner._server, runner._spec = server.runtime, server, spec
        return runner

    def _binds(self, spec: Benchmark, extra: list[Bind]) -> tuple[list[Bind], dict[str, str]]:
        """The spec's named binds, plus its entry point's module when that lives beside the user."""
        named = {name: Bind.parse(text) for name, text in spec.binds.items()}
        paths = {f"bind:{name}": self.runtime.path_inside(bind) for name, bind in named.items()}
        code = local_modules([spec.entry_point])
        self.local_code += [m for m in code if m not in self.local_code]
        code_binds = [Bind(str(m.path), f"{CODE_INSIDE}/{m.path.name}") for m in code]
        return [*extra, *named.values(), *code_binds], paths

    def _env(self, binds: list[Bind]) -> dict[str, str]:
        return code_environment(self.runtime, binds, self.env)

    def _request(self, placement: Any, binds: list[Bind], spec: Benchmark, *, agent: bool = False, gpu: bool = False,
                 companions: list[tuple[int, str]] | None = None) -> Any:
        """One Slurm job component: this runner's runtime, image and environment, with the heartbeat unless detached."""
        from dacstyle.slurm.job import ServerRequest

        return ServerRequest(placement, self.runtime, self.image, binds, self._env(binds), gpu, agent, benchmark=spec,
                             idle_timeout=config.heartbeat_timeout if self._heartbeat else 0,
                             companions=list(companions or []))

    def _start_server(self, binds: list[Bind], agent: bool = False) -> Server:
        if self.placement is not None:  # another server of a Slurm-placed runner (a vector env's): its own job
            from dacstyle.slurm.job import submit_servers

            request = self._request(self.placement, binds, self._spec, agent=agent, gpu=self.gpu)
            return submit_servers(self.benchmark.name, [request], self.start_timeout)[0]
        server = Server.start(
            self.runtime,
            image=self.image,
            binds=binds,
            env=self._env(binds),
            gpu=self.gpu,
            agent=agent,
            start_timeout=self.start_timeout,
            call_timeout=self.call_timeout,
        )
        server.channel.token_file = str(server.server_dir.path / "host" / "token")  # what Server.start read
        return server

    def _resolve_image(self) -> Path:
        from dacstyle.images.default import image_for

        return image_for(self.benchmark, self.image_ref)

    @property
    def job_id(self) -> str | None:
        """The Slurm job id of the server (a string), or None for a server on this node."""
        process = self.server.process
        return getattr(process, "job_id", None)

    @property
    def server(self) -> Server:
        """The running server (starts it on first use)."""
        self.start()
        assert self._server is not None
        return self._server

    def close(self) -> None:
        """Stop the server(s) and remove their run folders; results and logs stay (idempotent)."""
        self._closed = True
        vectors, self._vector_envs = self._vector_envs, []
        for vector in vectors:
            vector.close()
        servers = [self._server, *self._companion_servers.values()]
        self._server, self._companion_servers, self.companions = None, {}, {}
        for server in servers:
            if server is not None:
                server.close()

    def __enter__(self) -> "RemoteRunner":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self._server is not None else "stopped"
        digest = self._describe_image()["sha256"] if self.image is not None else None
        image = f"sha256:{digest[:12]}" if digest else "none"
        return f"<RemoteRunner {self.benchmark.name!r} runtime={self.runtime.name} image={image} {state}>"

    # -- proxies -------------------------------------------------------------------
    def get_environment(self) -> RemoteEnvironment:
        """A new gymnasium.Env proxy of the benchmark's environment.

        A spec with ``methods`` serves an object (BenchmarkError: use get_object());
        one without that builds no environment fails with a BenchmarkError saying so.
        """
        if not self.benchmark.is_environment:
            kind = "a callable" if "__call__" in (self.benchmark.methods or ()) else "an object"
            raise BenchmarkError(f"{self.benchmark.name!r} serves {kind} (methods {self.benchmark.methods}); "
                                 "use get_object()")
        env = self.server.create(self._spec)
        assert isinstance(env, RemoteEnvironment)
        env._adopt(self._spec)
        return env

    def env_fn(self) -> EnvFactory:
        """A picklable callable that builds a new environment on this runner's server, in any process.

        It carries the server's address and the path of its 0600 token file, never the token:
        ``gymnasium.vector.AsyncVectorEnv([runner.env_fn() for _ in range(4)], context="spawn")``.
        """
        self._check_environment()
        channel = self.server.channel
        assert channel.token_file is not None
        return EnvFactory(channel.location, channel.token_file, self._spec.to_json(), channel.call_timeout)

    def make_vector_env(self, num_envs: int, num_servers: int = 1, autoreset_mode: str = "NextStep") -> RemoteVectorEnv:
        """A gymnasium VectorEnv of ``num_envs`` sub-environments over ``num_servers`` servers.

        One round trip per server per step, the servers stepped concurrently; the semantics
        are those of ``SyncVectorEnv`` over the same environments. The first server is this
        runner's; the others start now and stop when the vector env or the runner closes.
        """
        from .vector import split_sizes

        self._check_environment()
        split_sizes(num_envs, num_servers)  # bad numbers fail before any server starts
        extra: list[Server] = []

        def stop_extra() -> None:
            for server in extra:
                server.close()

        try:
            for _ in range(num_servers - 1):
                extra.append(self._start_server(self._server_binds))
            channels = [self.server.channel, *(server.channel for server in extra)]
            vector = RemoteVectorEnv.create(channels, self._spec, num_envs, autoreset_mode, on_close=stop_extra)
        except BaseException:
            stop_extra()
            raise
        self._vector_envs.append(vector)
        return vector

    def _check_environment(self) -> None:
        """ClosedError on a closed runner; BenchmarkError for a benchmark that is not an environment."""
        if self._closed:
            raise ClosedError(f"the runner of {self.benchmark.name!r} is closed; make a new RemoteRunner")
        if not self.benchmark.is_environment:
            raise BenchmarkError(f"{self.benchmark.name!r} serves an object (methods {self.benchmark.methods}), "
                                 "not an environment; use get_object()")

    def get_object(self) -> RemoteObject:
        """A new proxy of the benchmark's object, with exactly its served methods.

        With ``"__call__"`` among them the proxy is callable: ``obj(config, fidelity=...)``.
        """
        if self.benchmark.is_environment:
            raise BenchmarkError(f"{self.benchmark.name!r} lists no methods, so it is served as an environment: "
                                 "use get_environment(), or give its spec methods=[...] to serve an object")
        obj = self.server.create(self._spec)
        assert isinstance(obj, RemoteObject)
        return obj

    # -- running -------------------------------------------------------------------
    def run(self, agent: Any, number_of_episodes: int = 1, log_steps: bool | int = True,
            progress: bool | None = None) -> RunResults:
        """Run ``agent`` for some episodes on a fresh remote environment; log them to a run folder.

        ``log_steps``: True logs every step, an int N every N-th, False none (returns,
        lengths and digests are always kept). ``progress`` shows a bar over episodes
        (None: only in Jupyter or a terminal). An agent with ``reseed`` (the shipped
        baselines) restarts from its seed, or the benchmark's when it has none.
        """
        from dacstyle.agents import as_agent
        from dacstyle.agents.loop import iter_episodes
        from dacstyle.results.log import DIGEST, EpisodeLog, check_log_steps
        from dacstyle.results.progress import episode_bar
        from dacstyle.results.rerun import describe_agent

        if self._closed:
            raise ClosedError(f"the runner of {self.benchmark.name!r} is closed; make a new RemoteRunner")
        if number_of_episodes < 1:
            raise ValueError("number_of_episodes must be at least 1")
        check_log_steps(log_steps)
        reseed = getattr(agent, "reseed", None)
        if callable(reseed):
            reseed(self.benchmark.seed)
        agent_record = describe_agent(agent)
        agent = as_agent(agent)
        folder = new_run_folder(self.runs_dir, self.benchmark.name)
        env = self.get_environment()
        started = time.time()
        manifest = self._manifest(started, number_of_episodes)
        manifest.update(agent=agent_record, log_steps=log_steps, digest=DIGEST, episodes=[])
        write_manifest(folder / "manifest.json", manifest)
        episode_log = EpisodeLog(folder / "episodes.jsonl", log_steps)
        bar = episode_bar(number_of_episodes, progress, self.benchmark.name)
        episodes: list[dict[str, Any]] = []
        try:
            for record in iter_episodes(env, agent, number_of_episodes, seed=self.benchmark.seed,
                                        on_step=episode_log.on_step, on_reset=episode_log.on_reset):
                line = episode_log.end_episode(record)
                episodes.append({k: v for k, v in line.items() if k != "steps"})
                bar.update(1)
        finally:
            bar.close()
            episode_log.close()
            env.close()
            manifest["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat()
            manifest["episodes_completed"] = len(episodes)
            manifest["episodes"] = episode_log.digests
            write_manifest(folder / "manifest.json", manifest)
            self._copy_server_log(folder)
        extra = {}
        if self.benchmark.finish:
            name, _, method = self.benchmark.finish.partition(".")
            extra[method] = getattr(self.companions[name], method)()  # e.g. a grader grading what the agent left
            write_manifest(folder / f"{method}.json", codec.encode(extra[method]))
        return RunResults(self.benchmark.name, episodes, folder, extra, manifest)

    def _manifest(self, started: float, episodes: int) -> dict[str, Any]:
        return {
            "benchmark": json.loads(self.benchmark.to_json()),
            "seed": self.benchmark.seed,
            "episodes_requested": episodes,
            "started": _dt.datetime.fromtimestamp(started, _dt.timezone.utc).isoformat(),
            "runtime": self.runtime.describe(),
            "image": self._describe_image() if self.image is not None else None,
            "local_code": [module.record() for module in self.local_code],
            "host": versions(),
            "server": self.server.hello,
            "config": codec.encode({k: str(v) if isinstance(v, Path) else v for k, v in config.as_dict().items()}),
        }

    def _describe_image(self) -> dict[str, Any]:
        """The manifest's record of the image (path, sha256, size, labels, reference); hashed once per runner."""
        assert self.image is not None
        if self._image_record is None or self._image_record["path"] != str(self.image):
            from dacstyle.images.default import describe_image

            self._image_record = describe_image(self.image)
            self._image_record["reference"] = str(self.image_ref) if self.image_ref is not None else None
        return self._image_record

    def _copy_server_log(self, folder: Path) -> None:
        if self._server is not None and self._server.server_dir.log_path.exists():
            shutil.copyfile(self._server.server_dir.log_path, folder / "server.log")

