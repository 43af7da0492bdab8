"""The one exception type that the CLI turns into a one-line message (no traceback unless ``--debug``)."""

from __future__ import annotations

__all__ = ["SegvolError"]


class SegvolError(Exception):
    """A problem the user can fix: bad input, a missing file, an inconsistent configuration.

    The message names the file (when there is one) and the problem in one line.
    """
