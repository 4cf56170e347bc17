"""One self-contained HTML page for one or several runs (``dacstyle report``).

Plots are embedded as PNG data URIs and the page carries a Content-Security-Policy
that allows nothing but inline styles and data: images, so opening it makes no
request, even if a manifest carries a URL (it is shown as text, never linked).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
from pathlib import Path
from typing import Any, Iterable, Sequence

from .plots import png_bytes, returns_figure, step_time_figure
from .results import RunResults

__all__ = ["render_report", "write_report"]

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 70em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
img.plot { display: block; max-width: 100%; margin: 0.5em 0 1.5em; }
code { font-size: 0.9em; }
"""


def write_report(folders: Iterable[Path | str], out: Path | str) -> Path:
    """Read the run folders (digests checked) and write the report to ``out``; returns its path."""
    runs = [RunResults.load(folder) for folder in folders]
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_report(runs), encoding="utf-8")
    tmp.replace(out)
    return out


def render_report(runs: Sequence[RunResults]) -> str:
    """The report page for ``runs`` as a string."""
    from dacstyle import __version__

    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
        f"<title>dacstyle report: {_e(', '.join(sorted({r.benchmark for r in runs})))}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>dacstyle report</h1><p>{len(runs)} run(s), written {now} by dacstyle {_e(__version__)}.</p>",
        "<h2>Runs</h2>", _overview(runs),
        "<h2>Return per episode and episode length</h2>",
        _img(returns_figure(runs), "return per episode with a rolling mean, and episode length"),
        "<h2>Step time</h2>",
        _img(step_time_figure(runs), "distribution of the mean step time of each episode"),
    ]
    for run in runs:
        parts.append(_run_section(run))
    parts.append("</body></html>")
    return "\n".join(parts)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _img(figure: Any, alt: str) -> str:
    data = base64.b64encode(png_bytes(figure)).decode("ascii")
    return f"<img class='plot' alt='{_e(alt)}' src='data:image/png;base64,{data}'>"


def _table(rows: Iterable[tuple[Any, Any]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _overview(runs: Sequence[RunResults]) -> str:
    columns = ["folder", "benchmark", "episodes", "mean return", "std return", "mean length", "seed", "agent",
               "runtime", "image sha256", "grade"]
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    rows = []
    for run in runs:
        facts = run.summary()
        facts["folder"] = run.path.name if run.path is not None else ""
        facts["image sha256"] = (facts["image sha256"] or "")[:16]
        grade = run.extra.get("grade")
        facts["grade"] = f"{grade.get('score')} ({grade.get('medal') or 'no medal'})" if grade else ""
        rows.append("<tr>" + "".join(f"<td>{_e(_fmt(facts[c]))}</td>" for c in columns) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _run_section(run: RunResults) -> str:
    manifest = run.manifest
    image = manifest.get("image") or {}
    agent = manifest.get("agent") or {}
    parts = [f"<h2>{_e(run.label)}</h2>"]
    grade = run.extra.get("grade")
    if grade is not None:
        parts.append("<h3>Grade</h3>")
        graded = grade.get("report") or {}
        parts.append(_table([("competition", graded.get("competition")), ("metric", graded.get("metric")),
                             ("score", grade.get("score")), ("valid", grade.get("valid")),
                             ("medal", grade.get("medal") or "none"),
                             ("errors", "; ".join(e.get("message", "") for e in grade.get("errors") or []))]))
    parts.append("<h3>Manifest</h3>")
    parts.append(_table([
        ("folder", run.path), ("started", manifest.get("started")), ("finished", manifest.get("finished")),
        ("episodes requested / completed", f"{manifest.get('episodes_requested')} / "
                                           f"{manifest.get('episodes_completed')}"),
        ("benchmark seed", manifest.get("seed")), ("log_steps", manifest.get("log_steps")),
        ("agent", agent.get("entry_point") or agent.get("repr")), ("agent config", agent.get("config")),
        ("agent seed", agent.get("seed")), ("runtime", manifest.get("runtime")),
        ("image sha256", image.get("sha256")), ("image reference", image.get("reference")),
        ("image size", image.get("size")),
    ]))
    host, server = manifest.get("host") or {}, manifest.get("server") or {}
    keys = sorted(set(host) | set(server))
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(host.get(k)))}</td><td>{_e(_fmt(server.get(k)))}</td></tr>"
                   for k in keys)
    parts.append("<h3>Versions</h3><table><thead><tr><th></th><th>host</th><th>server (in the image)</th>"
                 f"</tr></thead><tbody>{rows}</tbody></table>")
    return "\n".join(parts)
