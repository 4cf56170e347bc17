"""HPOBench-style objectives: ConfigSpace through the codec, served callables, the right proxy getter."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ConfigSpace = pytest.importorskip("ConfigSpace", reason='the hpo tests need ConfigSpace: pip install -e ".[test]"')

from ConfigSpace import (  # noqa: E402
    Categorical, Configuration, ConfigurationSpace, Constant, EqualsCondition, Float, ForbiddenAndConjunction,
    ForbiddenEqualsClause, InCondition, Integer, Normal, OrdinalHyperparameter,
)

from dacstyle import RemoteRunner, codec  # noqa: E402
from dacstyle.benchmarks import Benchmark  # noqa: E402
from dacstyle.benchmarks.hpo import DigitsForestBenchmark, branin, branin_configuration_space  # noqa: E402
from dacstyle.errors import BenchmarkError, MissingDependencyError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOW = {"n_estimators": 4, "subsample": 0.3}  # a cheap fidelity
BRANIN = Benchmark(name="branin", entry_point="dacstyle.benchmarks.hpo:branin", factory=False)


def wire(value):
    """``value`` through the codec and a real JSON text, as it crosses the channel."""
    return codec.decode(json.loads(json.dumps(codec.encode(value), allow_nan=False)))


def rich_space(seed: int | None = None) -> ConfigurationSpace:
    """Every kind of hyperparameter, a condition chain and a forbidden clause."""
    space = ConfigurationSpace(name="rich", seed=seed, meta={"owner": "tests", "__nd__": 1})
    kernel = Categorical("kernel", ["rbf", "poly", "linear"], weights=[0.5, 0.3, 0.2])
    degree = Integer("degree", (2, 5))
    gamma = Float("gamma", (1e-4, 1.0), log=True)
    space.add([kernel, degree, gamma, Constant("c", 3), Float("noise", (-3.0, 3.0), distribution=Normal(0.0, 1.0)),
               OrdinalHyperparameter("size", ["s", "m", "l"]), Integer("layers", (1, 8), log=True)])
    space.add([EqualsCondition(degree, kernel, "poly"), InCondition(gamma, kernel, ["rbf", "poly"])])
    space.add(ForbiddenAndConjunction(ForbiddenEqualsClause(kernel, "linear"),
                                      ForbiddenEqualsClause(space["size"], "l")))
    return space


# -- the codec -------------------------------------------------------------------------
def test_a_configuration_space_crosses_as_the_same_real_space():
    space = rich_space()
    back = wire(space)
    assert type(back) is ConfigurationSpace and back == space
    assert back.name == "rich" and back.meta == space.meta
    assert list(back.conditions) == list(space.conditions)
    assert list(back.forbidden_clauses) == list(space.forbidden_clauses)
    assert codec.encode(space)["__cs__"]["json"]["hyperparameters"][0]["name"] == "c"  # ConfigSpace's own serialisation


def test_configurations_cross_with_their_values_and_space_bit_for_bit():
    space = rich_space(seed=7)
    configs = space.sample_configuration(25) + [space.get_default_configuration()]
    back = wire({"batch": configs, "pair": (configs[0], space), 3: configs[1]})
    assert isinstance(back["pair"], tuple) and back["pair"][1] == space and back[3] == configs[1]
    for got, want in zip(back["batch"], configs):
        assert type(got) is Configuration and got == want and got.config_space == space
        assert dict(got) == dict(want)  # inactive hyperparameters stay absent, floats keep every bit
        assert all(type(got[k]) is type(want[k].item() if hasattr(want[k], "item") else want[k]) for k in got)


def test_configurations_of_one_space_share_it_until_it_is_changed():
    space = rich_space(seed=1)
    first, second = wire(space.sample_configuration(2))
    assert first.config_space is second.config_space  # rebuilt once, not per configuration
    first.config_space.add(Integer("extra", (1, 3)))  # a receiver changing what it got ...
    third = wire(space.get_default_configuration())
    assert third.config_space is not first.config_space and third.config_space == space  # ... is not reused
    assert "extra" not in third.config_space


def test_other_values_still_refuse_to_travel_when_configspace_is_loaded():
    with pytest.raises(TypeError, match="cannot send a value of type builtins.set"):
        codec.encode({1, 2})


def test_a_receiving_side_without_configspace_names_the_install_command(monkeypatch):
    tree = json.loads(json.dumps(codec.encode([rich_space(), rich_space().get_default_configuration()])))
    monkeypatch.setitem(sys.modules, "ConfigSpace", None)  # "import ConfigSpace" now fails as if not installed
    for item in tree:
        with pytest.raises(MissingDependencyError, match=r'pip install "dacstyle\[hpo\]"') as caught:
            codec.decode(item)
        assert isinstance(caught.value, ImportError)


# -- the spec --------------------------------------------------------------------------
def test_specs_may_serve_call_and_a_function_itself():
    assert BRANIN.methods == ["__call__"] and not BRANIN.is_environment
    assert Benchmark.from_json(BRANIN.to_json()) == BRANIN
    assert BRANIN.build() is branin
    legacy = json.loads(DigitsForestBenchmark().to_json())
    del legacy["factory"]  # specs written before the field existed still load
    assert Benchmark.from_json(json.dumps(legacy)).factory is True
    with pytest.raises(BenchmarkError, match="public identifiers or '__call__'"):
        Benchmark(name="x", entry_point="m:f", methods=["__init__"])
    with pytest.raises(BenchmarkError, match="takes no config"):
        Benchmark(name="x", entry_point="m:f", factory=False, config={"a": 1})
    with pytest.raises(BenchmarkError, match="factory must be True or False"):
        Benchmark(name="x", entry_point="m:f", factory="no")


def test_a_spec_without_methods_that_builds_no_environment_says_what_to_do():
    bench = Benchmark(name="forest", entry_point="dacstyle.benchmarks.hpo:DigitsForestObjective")
    with pytest.raises(BenchmarkError, match=r"built a DigitsForestObjective, not an environment.*get_object\(\)"):
        bench.get_environment()
    with pytest.raises(BenchmarkError, match=r"serves an object \(methods \['__call__'\]\).*build\(\)"):
        BRANIN.get_environment()


# -- served through a runtime ----------------------------------------------------------
def check_served_objective(runner: RemoteRunner) -> None:
    """The remote objective answers exactly as the local one, spaces and configurations as real objects."""
    local = runner.benchmark.build()
    objective = runner.get_object()
    assert callable(objective)
    space = objective.get_configuration_space(seed=3)
    assert type(space) is ConfigurationSpace and space == local.get_configuration_space()
    fidelity_space = objective.get_fidelity_space()
    assert fidelity_space == local.get_fidelity_space()
    for config in space.sample_configuration(3):
        fidelity = Configuration(fidelity_space, values=LOW)  # a Configuration as a keyword argument too
        got, want = objective(config, fidelity=fidelity), local(config, fidelity=fidelity)
        assert got["function_value"] == want["function_value"] and got["info"] == want["info"]
        assert objective.objective_function(config, LOW, rng=5)["function_value"] == \
            local.objective_function(config, LOW, rng=5)["function_value"]
    with pytest.raises(BenchmarkError, match="invalid configuration") as caught:
        objective({"max_depth": 0}, fidelity=LOW)
    assert "objective_function" in caught.value.remote_traceback
    assert objective.get_meta_information()["seed"] == runner.benchmark.seed


def check_served_function(runner: RemoteRunner) -> None:
    """A plain function entry point: the proxy is callable and takes a Configuration."""
    function = runner.get_object()
    assert callable(function) and type(function).__name__ == "RemoteBranin"
    for config in branin_configuration_space(seed=1).sample_configuration(5):
        assert function(config, fidelity={"budget": 1}) == branin(config, fidelity={"budget": 1})
    with pytest.raises(ValueError, match="could not convert") as caught:  # the function's own error, typed
        function({"x1": "a", "x2": 1.0})
    assert caught.value.remote_traceback
    with pytest.raises(BenchmarkError, match=r"serves a callable.*use get_object\(\)"):
        runner.get_environment()


def test_an_objective_is_served_by_the_process_runtime(no_leftovers):
    with RemoteRunner(DigitsForestBenchmark(seed=2), runtime="process") as runner:
        check_served_objective(runner)


def test_a_plain_function_is_served_by_the_process_runtime(no_leftovers):
    with RemoteRunner(BRANIN, runtime="process") as runner:
        check_served_function(runner)


def test_a_server_without_configspace_answers_with_the_install_command(tmp_path, no_leftovers):
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "ConfigSpace.py").write_text("raise ModuleNotFoundError(\"No module named 'ConfigSpace'\")\n")
    count = Benchmark(name="count", entry_point="builtins:len", factory=False)
    with RemoteRunner(count, runtime="process", env={"PYTHONPATH": str(blocked)}) as runner:
        remote_len = runner.get_object()
        assert remote_len([1, 2, 3]) == 3
        install = r'not installed here: pip install "dacstyle\[hpo\]"'
        with pytest.raises(MissingDependencyError, match=install) as caught:
            remote_len(branin_configuration_space().get_default_configuration())
        assert caught.value.remote_traceback and remote_len("ok") == 2  # the server goes on


def test_the_wrong_getter_names_the_right_one(no_leftovers):
    not_an_env = Benchmark(name="forest", entry_point="dacstyle.benchmarks.hpo:DigitsForestObjective")
    with RemoteRunner(not_an_env, runtime="process") as runner:
        with pytest.raises(BenchmarkError, match=r"served as an environment: use get_environment\(\), or .*methods="):
            runner.get_object()
        with pytest.raises(BenchmarkError, match=r"not an environment \(no reset, step.*use get_object\(\)"):
            runner.get_environment()


@pytest.fixture(scope="module")
def configspace_binds(packed_image: Path) -> tuple[list[str], dict[str, str]]:
    """Binds and environment that bring ConfigSpace into the packed image, if it lacks it.

    Asked of the image itself: a probe imports ConfigSpace in a container. An image
    packed from dacstyle's requirement closure only lacks it (it is an extra); one
    packed from the whole environment has it, and then no bind is made.
    """
    probe = Benchmark(name="probe", entry_point="importlib:import_module", config={"name": "ConfigSpace"},
                      seed_key="", methods=["Configuration"])
    try:
        with RemoteRunner(probe, runtime="bwrap", image=packed_image) as runner:
            runner.get_object()
        return [], {}
    except BenchmarkError as exc:
        assert "No module named 'ConfigSpace'" in str(exc), exc
    binds = []
    for name in ("ConfigSpace", "more-itertools", "pyparsing"):  # ConfigSpace's requirements beyond the closure
        dist = md.distribution(name)
        for top in sorted({f.parts[0] for f in dist.files or () if f.parts[0] != ".."}):
            binds.append(f"{dist.locate_file(top)}:/opt/hpo-site/{top}:ro")
    return binds, {"PYTHONPATH": "/opt/hpo-site"}


@pytest.mark.slow
@pytest.mark.container
def test_an_objective_is_served_from_a_bwrap_container(packed_image, configspace_binds, no_leftovers):
    binds, env = configspace_binds
    with RemoteRunner(DigitsForestBenchmark(seed=4), runtime="bwrap", image=packed_image, binds=binds,
                      env=env) as runner:
        assert runner.server.hello["pid"] != os.getpid()
        check_served_objective(runner)


@pytest.mark.container
def test_a_plain_function_is_served_from_a_bwrap_container(packed_image, configspace_binds, no_leftovers):
    binds, env = configspace_binds
    with RemoteRunner(BRANIN, runtime="bwrap", image=packed_image, binds=binds, env=env) as runner:
        check_served_function(runner)


# -- the example -----------------------------------------------------------------------
def run_example(tmp_path: Path, runtime: str) -> subprocess.CompletedProcess:
    """The example as a user runs it, in a fresh runs folder (and, for a container, a fresh cache)."""
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "hpo_random_search.py"), "--runtime", runtime,
                           "--trials", "4", "--trees", "4"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "DACSTYLE_RUNS": str(tmp_path / "runs"),
                                            "DACSTYLE_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.slow
def test_the_random_search_example_agrees_with_the_local_objective(tmp_path):
    done = run_example(tmp_path, "process")
    assert "remote and local results agree: yes" in done.stdout
    rows = [line.split() for line in done.stdout.splitlines() if line.strip()[:1].isdigit() and len(line.split()) > 6]
    assert len(rows) == 4 and all(row[5] == row[6] for row in rows)


@pytest.mark.slow
@pytest.mark.container
def test_the_random_search_example_runs_in_the_default_image(packed_image, configspace_binds, tmp_path):
    if configspace_binds[0]:
        pytest.skip("the packed image has no ConfigSpace: it packs dacstyle's requirement closure only")
    from dacstyle.images import ImageCache
    from dacstyle.images.default import environment_key

    ImageCache(tmp_path / "cache").add(packed_image, ref=environment_key())
    done = run_example(tmp_path, "bwrap")
    assert "runtime: bwrap | image:" in done.stdout and "remote and local results agree: yes" in done.stdout
