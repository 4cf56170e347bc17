"""The one batch-script template every dacstyle Slurm job is made from.

A job has one or more components (a heterogeneous job: ``#SBATCH hetjob``
between them), each with its ``#SBATCH`` lines and one command, which runs as a
step of its component (``srun --het-group=N``). The script waits for every
step and exits with the first failure. The tests compare scripts with golden
files (``tests/golden/*.sbatch``).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from .placement import Slurm

__all__ = ["Component", "render"]

TEMPLATE = """\
#!/bin/bash
# {purpose}
# Made by dacstyle from its one template; Slurm runs it, nobody edits it.
{directives}
set -u
status=0
pids=()
{steps}
for pid in "${{pids[@]}}"; do wait "$pid" || status=$?; done
exit "$status"
"""


@dataclass(frozen=True)
class Component:
    """One component of a job: where it runs and the argv its step runs."""

    placement: Slurm
    argv: list[str]


def render(name: str, purpose: str, components: list[Component], output: str, array: str | None = None) -> str:
    """The batch script of a job named ``name``: its components' directives and steps, ``output`` as its log."""
    if not components:
        raise ValueError("a job needs at least one component")
    head = [f"--job-name={name}", f"--output={output}", "--open-mode=append"] + ([f"--array={array}"] if array else [])
    blocks = []
    for index, component in enumerate(components):
        options = (head if index == 0 else []) + component.placement.directives()
        for option in options:
            if any(c.isspace() for c in option):  # sbatch reads #SBATCH lines word by word, unquoted
                raise ValueError(f"sbatch option {option!r} holds whitespace (a shared_dir with a space in its path?)")
        blocks.append("\n".join(f"#SBATCH {option}" for option in options))
    directives = "\n#SBATCH hetjob\n".join(blocks)
    steps = []
    for index, component in enumerate(components):
        group = [f"--het-group={index}"] if len(components) > 1 else []
        srun = ["srun", *group, "--nodes=1", "--ntasks=1", f"--cpus-per-task={component.placement.cpus}"]
        steps.append(" ".join(shlex.quote(word) for word in [*srun, *component.argv]) + " & pids+=($!)")
    return TEMPLATE.format(purpose=purpose.replace("\n", " "), directives=directives, steps="\n".join(steps))
