"""Random search on an HPOBench-style objective, in a container and locally, side by side.

The objective (a random forest on scikit-learn's digits data, with the number of
trees and the fraction of training data as fidelities) is served through
RemoteRunner; its configuration space comes back as a real ConfigSpace object,
and each sampled Configuration travels to the container as one. The same search
then runs on the objective built locally: the function values must be the same.
Needs ConfigSpace (pip install "dacstyle[hpo]") here and in the image.

    python examples/hpo_random_search.py [--runtime auto|bwrap|apptainer|process] [--trials N] [--seed S]
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable

from ConfigSpace import Configuration, ConfigurationSpace

from dacstyle import RemoteRunner
from dacstyle.benchmarks.hpo import DigitsForestBenchmark


def random_search(objective: Callable[..., dict[str, Any]], space: ConfigurationSpace, fidelity: dict[str, Any],
                  trials: int, seed: int) -> list[tuple[Configuration, dict[str, Any]]]:
    """Sample ``trials`` configurations from ``space`` (seeded) and evaluate each at ``fidelity``."""
    space.seed(seed)
    return [(config, objective(config, fidelity=fidelity))
            for config in (space.sample_configuration() for _ in range(trials))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", default="auto", help="auto (default), apptainer, singularity, bwrap or process")
    parser.add_argument("--trials", type=int, default=10, help="configurations to try (default 10)")
    parser.add_argument("--trees", type=int, default=16, help="fidelity of the search: trees per forest (default 16)")
    parser.add_argument("--subsample", type=float, default=0.5, help="fidelity: training fraction (default 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="data split, forest and search seed (default 0)")
    args = parser.parse_args()
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    bench = DigitsForestBenchmark(seed=args.seed)
    fidelity = {"n_estimators": args.trees, "subsample": args.subsample}

    with RemoteRunner(bench, runtime=args.runtime) as runner:
        objective = runner.get_object()              # callable, like an HPOBench benchmark
        space = objective.get_configuration_space()  # a real ConfigurationSpace, rebuilt here
        print(f"runtime: {runner.runtime.name} | image: {runner.image or '(none: plain subprocess)'}")
        print(f"{space}\nfidelity space: {list(objective.get_fidelity_space())}, searching at {fidelity}\n")
        remote = random_search(objective, space, fidelity, args.trials, args.seed)
        best_config, best = min(remote, key=lambda run: run[1]["function_value"])
        remote_test = objective.objective_function_test(best_config)  # full fidelity, held-out split

    local_objective = bench.build()                  # the same objective, in this process
    local_space = local_objective.get_configuration_space()
    local = random_search(local_objective, local_space, fidelity, args.trials, args.seed)
    local_test = local_objective.objective_function_test(best_config)

    print(f"{'trial':>5}  {'max_depth':>9}  {'split':>5}  {'leaf':>4}  {'features':>8}  "
          f"{'error (remote)':>14}  {'error (local)':>13}  {'fit s (remote / local)':>22}")
    for trial, ((config, got), (_, want)) in enumerate(zip(remote, local)):
        print(f"{trial:>5}  {config['max_depth']:>9}  {config['min_samples_split']:>5}  "
              f"{config['min_samples_leaf']:>4}  {config['max_features']:>8.3f}  {got['function_value']:>14.4f}  "
              f"{want['function_value']:>13.4f}  {got['cost']:>10.3f} / {want['cost']:.3f}")
    same = space == local_space and all(
        a == b and got["function_value"] == want["function_value"] for (a, got), (b, want) in zip(remote, local))
    same = same and remote_test["function_value"] == local_test["function_value"]
    print(f"\nbest at {fidelity}: validation error {best['function_value']:.4f} with {dict(best_config)}")
    print(f"its test error at full fidelity: {remote_test['function_value']:.4f} (remote), "
          f"{local_test['function_value']:.4f} (local)")
    print(f"remote and local results agree: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
