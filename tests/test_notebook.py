"""The teaching notebook, executed headless by nbclient in a real Jupyter kernel, as CI runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("matplotlib")
pytest.importorskip("pandas")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "teaching.ipynb"


def outputs(cell) -> tuple[str, dict]:
    """A cell's text (streams and text/plain) and its rich data, merged."""
    text, data = "", {}
    for output in cell.get("outputs", []):
        text += output.get("text", "") + output.get("data", {}).get("text/plain", "")
        data.update(output.get("data", {}))
    return text, data


@pytest.mark.slow
@pytest.mark.container
def test_teaching_notebook_runs_in_the_image_and_its_rerun_is_identical(packed_image, tmp_path, monkeypatch,
                                                                        no_leftovers):
    monkeypatch.setenv("DACSTYLE_CACHE", str(tmp_path / "cache"))  # the kernel reads DACSTYLE_* like any user
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    parameters.source += f"\nruntime = 'bwrap'\nimage = {str(packed_image)!r}\nepisodes = 12\n"
    parameters.source += f"runs_dir = {str(tmp_path / 'runs')!r}\n"
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert not [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    run_text, run_data = outputs(code[1])
    assert "<RemoteRunner 'sigmoid' runtime=bwrap image=sha256:" in run_text
    assert "RunResults('sigmoid': 12 episodes, mean return" in run_text
    assert "<table class='summary'>" in run_data["text/html"]
    assert "text/html" in outputs(code[2])[1]  # the DataFrame
    assert "image/png" in outputs(code[3])[1]  # the plot, drawn
    assert "report: " in outputs(code[4])[0] and (tmp_path / "runs" / "teaching-report.html").is_file()
    assert outputs(code[5])[0].startswith("identical (every step compared")
    assert len([p for p in (tmp_path / "runs").iterdir() if p.is_dir()]) == 1  # the rerun left no folder
