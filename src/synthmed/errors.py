"""The one exception type for mistakes a user can fix (bad config, unknown plugin, missing data)."""

from __future__ import annotations


class SynthmedError(ValueError):
    """A user-facing error: the message says which thing, which value, and what to do.

    The CLI turns it into a ``click.ClickException`` (no traceback).
    """
