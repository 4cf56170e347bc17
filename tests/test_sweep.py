"""Sweeps: one run per seed, here and as one array job on a real single-host Slurm (tests/slurmcluster.py).

The local sweep and the array job run the same task code, so the array job must give
the same results seed by seed; the table must agree with the run folders it names.

Refresh the golden batch script after an intended change with::

    DACSTYLE_REFRESH_GOLDEN=1 pytest tests/test_sweep.py -k golden
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from dacstyle.benchmarks import Benchmark, SigmoidBenchmark
from dacstyle.cli import main
from dacstyle.errors import BenchmarkError, RunFolderError
from dacstyle.results import RunResults, compare_runs
from dacstyle.slurm import Slurm
from dacstyle.slurm.sweep import COLUMNS, _ranges, _task_ids, batch_script, parse_seeds, sweep

GOLDEN = Path(__file__).parent / "golden"
REFRESH = os.environ.get("DACSTYLE_REFRESH_GOLDEN") == "1"  # read before clean_config clears DACSTYLE_*
SEEDS = [0, 1, 2, 3]
CURSED = """\
from dacstyle.benchmarks.sigmoid import SigmoidEnv


def make_env(seed=None):
    if seed == 1:
        raise RuntimeError("seed 1 is cursed")
    return SigmoidEnv(seed=seed)
"""

pytestmark = pytest.mark.filterwarnings("ignore::dacstyle.errors.IsolationWarning")


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _without_wall(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]


def _cursed(folder: Path) -> Benchmark:
    """A benchmark in a local module whose seed 1 fails to build."""
    (folder / "cursedbench.py").write_text(CURSED)
    return Benchmark(name="cursed", entry_point="cursedbench:make_env")


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory):
    """The 4-seed Sigmoid sweep run here (process runtime), once for the module."""
    out = tmp_path_factory.mktemp("local") / "out"
    return sweep(SigmoidBenchmark(), SEEDS, episodes=3, out=out, runtime="process", progress=False)


def test_local_sweep_table_matches_its_run_folders(local_sweep):
    out = local_sweep.csv.parent
    rows = _csv(local_sweep.csv)
    assert list(rows[0]) == list(COLUMNS)
    assert [int(r["seed"]) for r in rows] == SEEDS and {r["status"] for r in rows} == {"ok"}
    assert sorted(p.name for p in (out / "runs").iterdir()) == [f"sigmoid-seed{s}" for s in SEEDS]
    for row in rows:
        results = RunResults.load(out / row["run_folder"])  # digests checked
        assert results.manifest["seed"] == int(row["seed"]) == results.manifest["agent"]["seed"]
        assert int(row["episodes"]) == len(results.episodes) == 3
        assert float(row["mean_return"]) == results.mean_return  # bit for bit: floats are written as repr
        assert float(row["std_return"]) == results.summary()["std return"]
    assert len({r["mean_return"] for r in rows}) == len(SEEDS), "the seeds made no difference"
    assert local_sweep.failed == [] and local_sweep.job_id is None


def test_a_sweep_resumes_in_its_folder_and_refuses_another(local_sweep):
    out = local_sweep.csv.parent
    manifests = {p.name: (p / "manifest.json").read_bytes() for p in (out / "runs").iterdir()}
    (out / "runs" / "sigmoid-seed2" / "manifest.json").unlink()  # an incomplete run
    again = sweep(SigmoidBenchmark(), SEEDS, episodes=3, out=out, runtime="process", progress=False)
    assert _without_wall(again.rows) == _without_wall(local_sweep.rows)  # seed 2 ran again, to the same result
    for name, manifest in manifests.items():  # the others were kept as they were
        assert ((out / "runs" / name / "manifest.json").read_bytes() == manifest) == (name != "sigmoid-seed2")
    with pytest.raises(RunFolderError, match="holds another sweep"):
        sweep(SigmoidBenchmark(), SEEDS, episodes=2, out=out, runtime="process")
    with pytest.raises(RunFolderError, match="not empty and holds no sweep"):
        sweep(SigmoidBenchmark(), SEEDS, out=out / "runs", runtime="process")


def test_a_failed_run_is_a_row_and_the_others_are_kept(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    results = sweep(_cursed(tmp_path), [0, 1, 2], episodes=1, out=tmp_path / "out", runtime="process")
    assert [r["status"] for r in results.rows] == ["ok", "failed", "ok"]
    assert list(results.errors) == [1] and "seed 1 is cursed" in results.errors[1]
    rows = _csv(results.csv)
    assert rows[1]["run_folder"] == "" and rows[1]["mean_return"] == "" and rows[2]["run_folder"] == "runs/cursed-seed2"


def test_bad_sweeps_fail_before_anything_runs(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(BenchmarkError, match="unknown agent 'smart'"):
        sweep(SigmoidBenchmark(), [0], agent="smart", out=out)
    with pytest.raises(BenchmarkError, match="share a name"):
        sweep([SigmoidBenchmark(), SigmoidBenchmark(cutoff=5)], [0], out=out)
    with pytest.raises(ValueError, match="seed twice"):
        sweep(SigmoidBenchmark(), [1, 1], out=out)
    with pytest.raises(ValueError, match="episodes"):
        sweep(SigmoidBenchmark(), [0], episodes=0, out=out)
    assert not out.exists()


@pytest.mark.parametrize("text, seeds", [("0-3,7", [0, 1, 2, 3, 7]), ("5", [5]), (" 2 , 0-1", [2, 0, 1])])
def test_seeds_are_ranges_and_lists(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text, message", [("3-1", "runs backwards"), ("0,0-2", "names a seed twice"),
                                           ("a", "not a seed"), ("-1", "not a seed"), ("", "not a seed")])
def test_bad_seeds_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        parse_seeds(text)


@pytest.mark.parametrize("field, indices", [("3", [3]), ("0-5", [0, 1, 2, 3, 4, 5]), ("1,4-6%2", [1, 4, 5, 6]),
                                            ("0-6:3", [0, 3, 6]), ("", [])])
def test_array_task_ids_as_scontrol_prints_them(field, indices):
    assert _task_ids({"ArrayTaskId": field}) == indices


@pytest.mark.parametrize("indices", [[0], [3, 1, 2], [0, 1, 2, 5, 7, 8, 20]])
def test_the_array_spec_lists_exactly_the_tasks_to_run(indices):
    assert _task_ids({"ArrayTaskId": _ranges(indices)}) == sorted(indices)


def test_cli_sweep_prints_the_table_and_where_it_is(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["sweep", "sigmoid", "--seeds", "0-1", "--episodes", "1", "--runtime", "process", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and f"results: {out / 'results.csv'}" in printed
    assert [r["seed"] for r in _csv(out / "results.csv")] == ["0", "1"]
    assert main(["sweep", "sigmoid", "--seeds", "1-0", "--out", str(out)]) == 2
    assert "the range '1-0' runs backwards" in capsys.readouterr().err


def test_golden_array_batch_script():
    placement = Slurm(partition="cpu", time="00:10:00", mem="2G", extra=["--account=abc"])
    text = batch_script(Path("/shared/sweeps/sigmoid"), [0, 1, 2, 3, 7], placement, python="/opt/venv/bin/python3",
                        max_parallel=2)
    path = GOLDEN / "slurm_sweep_array.sbatch"
    if REFRESH:
        path.write_text(text)
    assert path.exists(), f"{path} is missing; create it with DACSTYLE_REFRESH_GOLDEN=1 pytest {__file__} -k golden"
    assert text == path.read_text(), (
        f"the sweep's batch script differs from {path}; if the change is intended, refresh with "
        f"DACSTYLE_REFRESH_GOLDEN=1 pytest {__file__} -k golden")


# -- as one array job on a real Slurm ----------------------------------------------------------------------------------
def _no_jobs(cluster) -> bool:
    return cluster.run("squeue", "-h", "-o", "%i").stdout.strip() == ""


def test_array_job_sweep_gives_the_local_results_seed_by_seed(slurm_cluster, local_sweep, tmp_path):
    out = tmp_path / "out"
    results = sweep(SigmoidBenchmark(), SEEDS, episodes=3, out=out, runtime="process",
                    placement=Slurm(partition="cpu", time="5"), timeout=120)
    assert results.job_id and results.failed == [], results.errors
    here = local_sweep.csv.parent
    assert _without_wall(_csv(results.csv)) == _without_wall(_csv(local_sweep.csv))
    for mine, theirs in zip(_csv(results.csv), _csv(local_sweep.csv)):
        comparison = compare_runs(here / theirs["run_folder"], out / mine["run_folder"])
        assert comparison.identical, comparison.difference  # every step, observation bytes included
    logs = sorted(p.name for p in (out / "logs").iterdir())
    assert logs == [f"{results.job_id}-{i}.log" for i in range(len(SEEDS))]
    assert "#SBATCH --array=0-3" in (out / "sweep.sbatch").read_text()
    assert _no_jobs(slurm_cluster)


def test_a_failed_array_task_is_reported_with_its_log_tail(slurm_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the job's environment is this one (sbatch --export=ALL)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    results = sweep(_cursed(tmp_path), [0, 1, 2], episodes=1, out=out, runtime="process",
                    placement=Slurm(partition="cpu", time="5"), timeout=120)
    assert [r["status"] for r in results.rows] == ["ok", "failed", "ok"]
    error = results.errors[1]
    assert f"task {results.job_id}_1 FAILED" in error and "seed 1 is cursed" in error  # the log's tail
    assert not (out / "runs" / "cursed-seed1").exists() and (out / "runs" / "cursed-seed2" / "manifest.json").is_file()
    # resuming submits only the failed task (still cursed, so it fails again)
    again = sweep(_cursed(tmp_path), [0, 1, 2], episodes=1, out=out, runtime="process",
                  placement=Slurm(partition="cpu", time="5"), timeout=120)
    assert again.job_id != results.job_id and "#SBATCH --array=1\n" in (out / "sweep.sbatch").read_text()
    assert [r["status"] for r in again.rows] == ["ok", "failed", "ok"]
    assert _no_jobs(slurm_cluster)


def test_an_array_job_that_never_starts_is_cancelled_with_slurms_reason(slurm_cluster, tmp_path):
    from dacstyle.config import config
    from dacstyle.errors import JobPendingError

    config.pending_timeout = 1.0
    later = Slurm(partition="cpu", time="5", extra=["--begin=now+600"])
    with pytest.raises(JobPendingError, match="no task started within 1 s.*BeginTime"):
        sweep(SigmoidBenchmark(), SEEDS, episodes=1, out=tmp_path / "out", runtime="process", placement=later)
    assert _no_jobs(slurm_cluster)


def test_at_its_deadline_the_array_job_is_cancelled_and_its_runs_say_so(slurm_cluster, tmp_path):
    long = Slurm(partition="cpu", time="5")
    results = sweep(SigmoidBenchmark(), [0], episodes=100_000, out=tmp_path / "out", runtime="process",
                    placement=long, timeout=2)
    assert results.rows[0]["status"] == "failed" and "cancelled at the sweep's 2 s deadline" in results.errors[0]
    assert _no_jobs(slurm_cluster)
