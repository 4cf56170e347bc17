"""Figures of one or several runs (matplotlib, the optional ``plot`` extra).

Figures are built with ``matplotlib.figure.Figure`` directly, never pyplot, so
nothing global changes and they render headless (the report saves them as PNG).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import MissingDependencyError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .results import RunResults

__all__ = ["returns_figure", "step_time_figure", "rolling_mean", "png_bytes"]


def _figure(**kwargs: Any) -> "Figure":
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingDependencyError('plots need matplotlib: pip install "dacstyle[plot]"') from exc
    _show_in_notebooks(Figure)
    return Figure(**kwargs)


def _show_in_notebooks(figure_type: type) -> None:
    """In IPython, display a bare Figure as PNG (pyplot's inline backend does this only for its own figures)."""
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    if shell is None:
        return
    formatter = shell.display_formatter.formatters["image/png"]
    try:
        formatter.lookup_by_type(figure_type)  # already shown (matplotlib-inline, or an earlier call)
    except KeyError:
        formatter.for_type(figure_type, png_bytes)


def rolling_mean(values: Sequence[float], window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each position (fewer at the start)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return data
    sums = np.cumsum(np.insert(data, 0, 0.0))
    ends = np.arange(1, data.size + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def default_window(episodes: int) -> int:
    """A rolling-mean window that smooths without hiding trends: 1 to 50 episodes."""
    return int(min(50, max(1, episodes // 10)))


def returns_figure(runs: Sequence["RunResults"], window: int | None = None) -> "Figure":
    """Return per episode with its rolling mean (top) and episode length (bottom), one colour per run."""
    figure = _figure(figsize=(8, 5.5), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    for index, run in enumerate(runs):
        color = f"C{index % 10}"
        episodes = np.arange(len(run.episodes))
        size = window or default_window(len(episodes))
        label = run.label
        prefix = f"{label}: " if len(runs) > 1 else ""
        top.plot(episodes, run.returns, ".", color=color, alpha=0.35, label=f"{prefix}return")
        top.plot(episodes, rolling_mean(run.returns, size), "-", color=color, label=f"{prefix}rolling mean ({size})")
        bottom.plot(episodes, run.lengths, "-", color=color, label=label)
    top.set_ylabel("return")
    top.legend(loc="best", fontsize="small")
    bottom.set_ylabel("episode length (steps)")
    bottom.set_xlabel("episode")
    return figure


def step_time_figure(runs: Sequence["RunResults"]) -> "Figure":
    """The distribution of the mean step time of each episode (wall time / length), in ms."""
    figure = _figure(figsize=(8, 3), layout="constrained")
    axes = figure.subplots()
    for index, run in enumerate(runs):
        times = [1000 * e["wall_time_s"] / e["length"] for e in run.episodes if e.get("length")]
        if times:
            axes.hist(times, bins=min(40, max(5, len(times) // 2)), color=f"C{index % 10}", alpha=0.6,
                      label=run.label)
    axes.set_xlabel("mean step time in an episode (ms, host wall clock)")
    axes.set_ylabel("episodes")
    axes.legend(loc="best", fontsize="small")
    return figure


def png_bytes(figure: "Figure", dpi: int = 96) -> bytes:
    """The figure as PNG bytes (for embedding in a page)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
