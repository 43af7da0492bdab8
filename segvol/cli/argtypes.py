"""argparse value types shared by every command: one-line messages for bad values."""

from __future__ import annotations

import argparse

__all__ = ["DEVICE_HELP", "device", "positive_int", "count", "fraction", "overlap"]

DEVICE_HELP = "auto (CUDA when present), cpu, cuda or cuda:N"


def device(text: str) -> str:
    low = text.lower()
    if low in ("auto", "cpu", "cuda") or (low.startswith("cuda:") and low[5:].isdigit()):
        return low
    raise argparse.ArgumentTypeError(f"{text!r}: expected {DEVICE_HELP}")


def _whole(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value}: must be at least {minimum}")
    return value


def positive_int(text: str) -> int:
    """1 or more."""
    return _whole(text, 1)


def count(text: str) -> int:
    """0 or more."""
    return _whole(text, 0)


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be in [0, 1)")
    return value


def overlap(text: str) -> float | str:
    """``auto`` or a number in [0, 1) (sliding-window overlap)."""
    return "auto" if text.strip().lower() == "auto" else fraction(text)
