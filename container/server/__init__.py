"""What runs inside the image: the guarded Pyro5 daemon and the objects it serves."""

from .main import build_parser, main

__all__ = ["main", "build_parser"]
