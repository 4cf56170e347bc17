"""Slurm placement: servers as Slurm jobs, reached over TLS, and sweeps as array jobs.

::

    from dacstyle.slurm import Slurm
    with RemoteRunner(bench, placement=Slurm(partition="cpu", time="00:30:00")) as runner:
        env = runner.get_environment()

Slurm's own commands are run as argv lists (:mod:`.commands`); every batch script
comes from one template (:mod:`.script`); a job runs the same server entry point
through the same runtime as on one node (:mod:`.jobmain`).
"""

from __future__ import annotations

from .placement import Slurm

__all__ = ["Slurm"]
