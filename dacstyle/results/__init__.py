"""Results of runs: the results object, run folders read back, re-runs and reports.

``RunResults`` is what ``RemoteRunner.run`` returns and what a run folder reads
back as (:meth:`RunResults.load`); :func:`rerun` re-runs a run from its manifest
and compares it step by step; :func:`write_report` renders one self-contained HTML
page for one or several runs.
"""

from __future__ import annotations

from .log import observation_digest, read_episodes, read_manifest
from .rerun import Comparison, compare_runs, rerun
from .report import write_report
from .results import RunResults

__all__ = [
    "RunResults",
    "Comparison",
    "rerun",
    "compare_runs",
    "write_report",
    "read_manifest",
    "read_episodes",
    "observation_digest",
]
