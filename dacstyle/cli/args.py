"""Argument types shared by the subcommands: each turns bad input into one argparse error line."""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

__all__ = ["at_least", "json_value", "json_object"]


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than ``low``."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is less than {low}")
        return value

    return convert


def json_value(text: str) -> Any:
    """An argparse type: any JSON value."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON ({exc.msg})") from None


def json_object(text: str) -> dict[str, Any]:
    """An argparse type: a JSON object (keyword arguments)."""
    value = json_value(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object such as '{{\"key\": 1}}'")
    return value
