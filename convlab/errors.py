"""convlab's own error for a caller's mistake, as the command line sees it.

:class:`UsageError` is a ``ValueError`` (code that catches ``ValueError`` still does), so
what the library raises reads like PyTorch's errors, while ``convlab``'s ``main`` can tell
a bad argument (one line on stderr, exit status 2) from a bug in convlab (a traceback,
which is what a bug report needs).  ``cli.py`` raises it for its own checks and turns the
library's argument-checking errors into it where it hands a user's arguments over
(:func:`usage`); nothing else is caught.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class UsageError(ValueError):
    """A command was given arguments it cannot run with (see the module docstring)."""


@contextlib.contextmanager
def usage(prefix: str = "") -> Iterator[None]:
    """Inside: a ``ValueError`` or ``TypeError`` raised while checking a user's arguments
    becomes a :class:`UsageError` (``prefix`` before its message)."""
    try:
        yield
    except UsageError:
        raise
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{prefix}{exc}") from exc
