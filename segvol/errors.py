"""The one exception type that the CLI turns into a one-line message (no traceback unless ``--debug``)."""

from __future__ import annotations

__all__ = ["SegvolError", "first_line"]


class SegvolError(Exception):
    """A problem the user can fix: bad input, a missing file, an inconsistent configuration.

    The message names the file (when there is one) and the problem in one line.
    """


def first_line(exc: BaseException, limit: int = 160, empty: str | None = None) -> str:
    """The first line of an exception's message, at most ``limit`` characters, for a one-line error (``empty``, else
    the exception's type name, when the message is blank)."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else empty or type(exc).__name__)[:limit]
