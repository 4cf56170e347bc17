"""What the sandbox limits cost: bwrap with and without them, side by side; prints medians.

"With" is the bwrap runtime as shipped (limits launcher, user namespace as uid
65534, no capabilities, no nested user namespaces, no network, sized tmpfs, a
pids cgroup where delegated). "Without" is the same argv with all of that taken
out, i.e. the sandbox before issue 8. Cold starts alternate between the two;
steps run on both servers at once, in alternating blocks.
Target: no cost on ``env.step``; a few ms at most on cold start.

    python perf/bench_sandbox.py [--steps 3000] [--starts 7] [--image IMAGE.sif]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import numpy as np

from dacstyle import RemoteRunner
from dacstyle.benchmarks import SigmoidBenchmark
from dacstyle.runtimes.base import LaunchSpec
from dacstyle.runtimes.bwrap import BwrapRuntime

_HARDENING = {"--unshare-user": 0, "--uid": 1, "--gid": 1, "--disable-userns": 0, "--cap-drop": 1,
              "--unshare-net": 0, "--size": 1}  # flag -> how many values follow it


class UnlimitedBwrap(BwrapRuntime):
    """The bwrap runtime with every limit of issue 8 taken out of its argv (for comparison only)."""

    def _argv(self, spec: LaunchSpec, command: list[str], network: bool) -> list[str]:
        argv = super()._argv(spec, command, network)
        argv = argv[argv.index("bwrap"):]  # no limits launcher
        plain, i = [], 0
        while argv[i] != "--":
            if argv[i] in _HARDENING:
                i += 1 + _HARDENING[argv[i]]
                continue
            plain.append(argv[i])
            i += 1
        return plain + argv[i:]


def step_us(runtimes: dict[str, BwrapRuntime], image: Path, steps: int, rounds: int = 6) -> dict[str, float]:
    """Median ``env.step`` round trip in microseconds per runtime, both running, in alternating blocks."""
    samples: dict[str, list[float]] = {name: [] for name in runtimes}
    action = np.array([2, 5])
    with contextlib.ExitStack() as stack:
        envs = {}
        for name, runtime in runtimes.items():
            runner = stack.enter_context(RemoteRunner(SigmoidBenchmark().set_seed(0), runtime=runtime, image=image))
            envs[name] = runner.get_environment()
            envs[name].reset(seed=0)
        for _ in range(rounds):
            for name, env in envs.items():
                for _ in range(steps // rounds):
                    started = time.perf_counter()
                    _, _, terminated, truncated, _ = env.step(action)
                    samples[name].append(time.perf_counter() - started)
                    if terminated or truncated:
                        env.reset()
    return {name: statistics.median(values) * 1e6 for name, values in samples.items()}


def cold_start_ms(runtime: BwrapRuntime, image: Path) -> float:
    """Mount + start + handshake + first reset, in milliseconds."""
    started = time.perf_counter()
    with RemoteRunner(SigmoidBenchmark().set_seed(0), runtime=runtime, image=image) as runner:
        runner.get_environment().reset()
        return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="steps per step measurement (default 3000)")
    parser.add_argument("--starts", type=int, default=7, help="cold starts per variant (default 7)")
    parser.add_argument("--image", help="SIF to run (default: the packed environment image)")
    args = parser.parse_args()
    if not BwrapRuntime.available():
        raise SystemExit("bwrap, squashfuse and /dev/fuse are needed")
    from dacstyle.images.default import default_image

    image = Path(args.image) if args.image else default_image(progress=False)
    limited, plain = BwrapRuntime(), UnlimitedBwrap()
    cold_start_ms(limited, image)  # warm the page cache once
    starts: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(args.starts):
        starts["with"].append(cold_start_ms(limited, image))
        starts["without"].append(cold_start_ms(plain, image))
    steps = step_us({"without": plain, "with": limited}, image, args.steps)
    cold = {name: statistics.median(values) for name, values in starts.items()}
    print(f"{'measurement (median)':<34} {'without':>10} {'with':>10}  ratio")
    print(f"{'cold start to first reset (ms)':<34} {cold['without']:>10.0f} {cold['with']:>10.0f}  "
          f"{cold['with'] / cold['without']:.2f}x")
    print(f"{'remote env.step (us)':<34} {steps['without']:>10.1f} {steps['with']:>10.1f}  "
          f"{steps['with'] / steps['without']:.2f}x")


if __name__ == "__main__":
    main()
