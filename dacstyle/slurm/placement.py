"""Where Slurm should run a server: a partition, a time limit and resources.

A :class:`Slurm` is a value: it renders to the ``#SBATCH`` lines of one job
component (:meth:`Slurm.directives`) and does nothing by itself; the runner
hands it to :mod:`dacstyle.slurm.job`, which submits and waits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Slurm", "parse_time"]

_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_time(text: str) -> float | None:
    """Seconds in a Slurm time (``MM``, ``MM:SS``, ``H:MM:SS``, ``D-H[:MM[:SS]]``); None for UNLIMITED.

    ValueError for anything else.
    """
    text = text.strip()
    if text.upper() in ("UNLIMITED", "INFINITE", "NOT_SET"):
        return None
    match = _TIME.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a Slurm time (MM, MM:SS, H:MM:SS or D-H:MM:SS)")
    days, a, b, c = match.groups()
    numbers = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-H, D-H:MM, D-H:MM:SS
        hours, minutes, seconds = (numbers + [0, 0])[:3]
        return ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
    if len(numbers) == 1:
        return numbers[0] * 60.0
    if len(numbers) == 2:
        return numbers[0] * 60.0 + numbers[1]
    return numbers[0] * 3600.0 + numbers[1] * 60 + numbers[2]


@dataclass(frozen=True)
class Slurm:
    """A Slurm placement: ``Slurm(partition="cpu", time="00:30:00", cpus=2, mem="4G", gpus=0, extra=[...])``.

    ``extra`` holds further ``sbatch`` options as given on its command line
    (``"--account=abc"``); each must be one ``--name=value`` or ``--flag`` word.
    """

    partition: str | None = None
    time: str | None = None
    cpus: int = 1
    mem: str | None = None
    gpus: int = 0
    extra: tuple[str, ...] | list[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra", tuple(self.extra))
        if self.time is not None:
            parse_time(self.time)
        if self.cpus < 1 or self.gpus < 0:
            raise ValueError("Slurm(cpus=...) must be at least 1 and gpus at least 0")
        for word in (self.partition or "", self.mem or "", *self.extra):
            if any(c in word for c in "\n\r\0") or (word and word.strip() != word):
                raise ValueError(f"Slurm option {word!r} holds whitespace or a line break")
        for word in self.extra:
            if not word.startswith("--") or " " in word:
                raise ValueError(f"Slurm(extra=[...]) takes sbatch options like '--account=abc', not {word!r}")

    def directives(self) -> list[str]:
        """This component's sbatch options, one ``--name=value`` per line."""
        lines = [f"--partition={self.partition}"] if self.partition else []
        lines += [f"--time={self.time}"] if self.time else []
        lines += ["--nodes=1", "--ntasks=1", f"--cpus-per-task={self.cpus}"]
        lines += [f"--mem={self.mem}"] if self.mem else []
        lines += [f"--gpus={self.gpus}"] if self.gpus else []
        return [*lines, *self.extra]

    @classmethod
    def parse(cls, text: str) -> "Slurm":
        """``partition=cpu,time=10,cpus=2,mem=4G,gpus=1`` (the CLI's ``--slurm``) as a placement."""
        fields: dict[str, object] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = item.partition("=")
            if not sep or key not in ("partition", "time", "cpus", "mem", "gpus", "account", "qos"):
                raise ValueError(f"--slurm takes key=value pairs (partition, time, cpus, mem, gpus, account, qos), "
                                 f"not {item!r}")
            if key in ("account", "qos"):
                fields.setdefault("extra", [])
                fields["extra"].append(f"--{key}={value}")  # type: ignore[union-attr]
            else:
                fields[key] = int(value) if key in ("cpus", "gpus") else value
        return cls(**fields)  # type: ignore[arg-type]
