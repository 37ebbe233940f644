"""The one exception the policy layer raises for a configuration it will not run with."""

from __future__ import annotations


class ConfigError(Exception):
    """An invalid or unsafe configuration: one message naming the key and what is wrong.

    The proxy refuses to start on it (and `explain` exits 2), so the message is written for
    the administrator who has to fix the file. It never contains proxy credentials.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
