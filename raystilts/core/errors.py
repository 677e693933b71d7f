"""User-facing errors: the CLI prints their message on one line and exits with code 2."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A mistake the user can fix (bad YAML, unknown task, unreachable server...).

    The message must name the bad value and the fix, on one line.
    """
