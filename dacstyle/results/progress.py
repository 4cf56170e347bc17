"""A progress bar over episodes (or runs): tqdm's auto flavour, a widget in Jupyter, off when nobody watches."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["episode_bar", "interactive"]


def interactive() -> bool:
    """True in a Jupyter kernel or when stderr is a terminal."""
    shell = sys.modules.get("IPython")
    if shell is not None:
        get = getattr(shell, "get_ipython", None)
        if get is not None and get() is not None and "IPKernelApp" in getattr(get(), "config", {}):
            return True
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def episode_bar(total: int, progress: bool | None, description: str, unit: str = "episode") -> Any:
    """A bar with ``update()`` and ``close()`` counting ``unit``s; ``progress`` None means "when interactive"."""
    enabled = interactive() if progress is None else bool(progress)
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=description, unit=unit, leave=False)
    except ImportError:  # tqdm.notebook without ipywidgets: the text bar still works
        from tqdm import tqdm as text_tqdm

        return text_tqdm(total=total, desc=description, unit=unit, leave=False, file=sys.stderr)


class _NoBar:
    def update(self, n: int = 1) -> None:
        """Nothing to show."""

    def close(self) -> None:
        """Nothing to close."""
