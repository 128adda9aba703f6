"""Exceptions raised by the twophase package.

    TwophaseError          the base class of every error the package raises on purpose
    ConfigError            a user setting is invalid; ``.errors`` maps each bad field to a message
    DatasetUnavailable     a dataset's files are missing; the message says where and how to get them
"""

from __future__ import annotations

from collections.abc import Mapping


class TwophaseError(Exception):
    """Base class of the errors raised by twophase on purpose."""


class ConfigError(TwophaseError, ValueError):
    """One or more settings are invalid.

    Args:
        errors: either a mapping ``field name -> message`` (one entry per bad field), or a
            single message string.
        field: with a single message string, the name of the field it is about (optional).

    ``.errors`` is always a dict ``field -> message``; ``str(error)`` lists them as
    ``"field: message; other: message"``. It is a ``ValueError``, so code that expects a
    ``ValueError`` for bad arguments also catches it.
    """

    def __init__(self, errors: Mapping[str, str] | str, field: str | None = None):
        if isinstance(errors, str):
            errors = {field or "config": errors}
        elif not isinstance(errors, Mapping):
            raise TypeError(
                f"ConfigError expects a dict of field -> message or a message string, "
                f"got {type(errors).__name__}"
            )
        self.errors: dict[str, str] = {str(k): str(v) for k, v in errors.items()}
        super().__init__(self._describe())

    def _describe(self) -> str:
        if not self.errors:
            return "invalid configuration"
        return "; ".join(f"{name}: {message}" for name, message in self.errors.items())

    def __reduce__(self):
        # keep .errors when pickled (e.g. sent from a worker process)
        return (type(self), (self.errors,))


class DatasetUnavailable(TwophaseError):
    """A dataset cannot be loaded because its files are missing or unreadable.

    The message says which folder and files were looked for and how to obtain them.
    """
