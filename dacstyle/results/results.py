"""RunResults: what ``RemoteRunner.run`` returns, and what a run folder reads back as.

A short ``repr``; in a notebook an HTML summary and table (``_repr_html_``);
``plot()`` a matplotlib figure; ``to_frame()`` a pandas DataFrame.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dacstyle import codec

from ..errors import MissingDependencyError
from .log import read_episodes, read_manifest

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["RunResults"]

_HTML_ROWS = 20


@dataclass(repr=False)
class RunResults:
    """Per-episode return, length and wall time of one run, with its folder and manifest."""

    benchmark: str
    episodes: list[dict[str, Any]]
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path | str) -> "RunResults":
        """Read a run folder back (manifest, episodes without their steps, grade); digests are checked."""
        folder = Path(folder)
        manifest = read_manifest(folder)
        episodes = list(read_episodes(folder, manifest, with_steps=False))
        extra: dict[str, Any] = {}
        grade = folder / "grade.json"
        if grade.is_file():
            import json

            extra["grade"] = codec.decode(json.loads(grade.read_text()))
        return cls(manifest["benchmark"]["name"], episodes, folder, extra, manifest)

    # -- numbers -------------------------------------------------------------------
    @property
    def returns(self) -> list[float]:
        """The return of each episode."""
        return [float(e["return"]) for e in self.episodes]

    @property
    def lengths(self) -> list[int]:
        """The number of steps of each episode."""
        return [int(e["length"]) for e in self.episodes]

    @property
    def mean_return(self) -> float:
        """The mean return over the episodes (NaN when there are none)."""
        return float(np.mean(self.returns)) if self.episodes else float("nan")

    @property
    def label(self) -> str:
        """A short name for legends: the benchmark and the run folder's name."""
        return f"{self.benchmark} ({self.path.name})" if self.path is not None else self.benchmark

    def summary(self) -> dict[str, Any]:
        """The facts a person looks at first, as a dict (used by repr, HTML and ``dacstyle runs``)."""
        agent = self.manifest.get("agent") or {}
        image = self.manifest.get("image") or {}
        returns = self.returns
        return {
            "benchmark": self.benchmark,
            "episodes": len(self.episodes),
            "mean return": self.mean_return,
            "std return": float(np.std(returns)) if returns else float("nan"),
            "mean length": float(np.mean(self.lengths)) if self.episodes else float("nan"),
            "seed": self.manifest.get("seed"),
            "agent": agent.get("entry_point") or agent.get("repr"),
            "agent seed": agent.get("seed"),
            "runtime": (self.manifest.get("runtime") or {}).get("name"),
            "image sha256": image.get("sha256"),
            "log_steps": self.manifest.get("log_steps"),
            "folder": str(self.path) if self.path is not None else None,
        }

    # -- views ---------------------------------------------------------------------
    def table(self) -> str:
        """A plain-text table, one row per episode and a mean row."""
        rows = [f"{'episode':>7}  {'return':>10}  {'length':>6}  {'wall s':>8}"]
        for e in self.episodes:
            rows.append(f"{e['episode']:>7}  {e['return']:>10.4f}  {e['length']:>6}  {e['wall_time_s']:>8.3f}")
        rows.append(f"{'mean':>7}  {self.mean_return:>10.4f}  {np.mean(self.lengths) if self.episodes else 0:>6.1f}")
        return "\n".join(rows)

    def __repr__(self) -> str:
        where = f", folder={str(self.path)!r}" if self.path is not None else ""
        return (f"RunResults({self.benchmark!r}: {len(self.episodes)} episodes, "
                f"mean return {self.mean_return:.4g}{where})")

    def _repr_html_(self) -> str:
        """A summary and a table of episodes (the first and last ones when there are many)."""
        facts = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
            for k, v in self.summary().items() if v is not None
        )
        shown = self.episodes
        if len(shown) > _HTML_ROWS:
            shown = [*shown[: _HTML_ROWS - 5], None, *shown[-5:]]
        rows = []
        for e in shown:
            if e is None:
                rows.append("<tr><td colspan='4'>&hellip;</td></tr>")
                continue
            rows.append(f"<tr><td>{e['episode']}</td><td>{e['return']:.4f}</td><td>{e['length']}</td>"
                        f"<td>{e['wall_time_s']:.3f}</td></tr>")
        return (
            "<div class='dacstyle-results'>"
            f"<table class='summary'>{facts}</table>"
            "<table class='episodes'><thead><tr><th>episode</th><th>return</th><th>length</th><th>wall s</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        )

    def plot(self, window: int | None = None) -> "Figure":
        """A matplotlib Figure: return per episode with a rolling mean, and episode length.

        Needs matplotlib (``pip install "dacstyle[plot]"``).
        """
        from .plots import returns_figure

        return returns_figure([self], window)

    def to_frame(self) -> Any:
        """The episodes as a pandas DataFrame (episode, return, length, wall_time_s, seed)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise MissingDependencyError('to_frame() needs pandas: pip install "dacstyle[notebook]"') from exc
        columns = ["episode", "return", "length", "wall_time_s", "seed"]
        frame = pd.DataFrame([{k: e.get(k) for k in columns} for e in self.episodes], columns=columns)
        frame["seed"] = frame["seed"].astype("object").where(frame["seed"].notna(), None)
        return frame


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
