"""Errors that carry a message for the user (the CLI prints them on one line and exits with code 2)."""

from __future__ import annotations


class MtlkitError(ValueError):
    """A bad name, value or file given by the user; the message names the problem and the fix."""


class UnknownNameError(MtlkitError, KeyError):
    """A name that is not in a registry; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
