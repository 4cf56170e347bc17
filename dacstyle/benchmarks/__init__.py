"""Benchmarks as data: the :class:`Benchmark` spec and the bundled benchmarks.

``BENCHMARKS`` maps the names the CLI accepts (``dacstyle run sigmoid``) to
factories ``factory(**config_overrides) -> Benchmark``. HPOBench-style
objectives are in :mod:`dacstyle.benchmarks.hpo` (it needs ConfigSpace).
"""

from __future__ import annotations

from typing import Callable

from .gym import GymnasiumBenchmark
from .luby import LubyBenchmark, LubyEnv
from .sigmoid import SigmoidBenchmark, SigmoidEnv
from .spec import Benchmark, load_entry_point

__all__ = [
    "Benchmark",
    "load_entry_point",
    "SigmoidBenchmark",
    "LubyBenchmark",
    "GymnasiumBenchmark",
    "SigmoidEnv",
    "LubyEnv",
    "BENCHMARKS",
]

BENCHMARKS: dict[str, Callable[..., Benchmark]] = {
    "sigmoid": SigmoidBenchmark,
    "luby": LubyBenchmark,
}
