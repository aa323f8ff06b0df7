"""The engine's error tree: every failure a user can see is one of these.

One root (`EngineError`) so callers can catch everything the engine raises;
builtins reused as second bases where the meaning is the same (`KeyError` for
a missing record, `ValueError` for bad input, `TimeoutError` for a remote that
did not answer in time). Each error may carry a fix-it `hint`, shown in
`str()`. Messages never contain the RedDB token.
"""

from __future__ import annotations


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""

    hint: str | None = None

    def __init__(self, message: str = "", *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} (hint: {self.hint})"
        return self.message


class ValidationError(EngineError, ValueError):
    """Bad input: wrong type, non-finite float, unknown enum value, empty id.

    Raised before anything is written.
    """


class UnknownFieldError(ValidationError):
    """A query named a field that the stream does not have."""


class DimensionError(ValidationError):
    """A vector's dimension does not match the index."""


class NotFoundError(EngineError, KeyError):
    """A key, record id or stream that does not exist."""

    def __str__(self) -> str:  # KeyError quotes its message; we do not
        return EngineError.__str__(self)


class ConfigError(EngineError, ValueError):
    """A configuration value (environment or keyword) that cannot be used."""


class StorageError(EngineError):
    """The local LMDB tier failed."""


class StorageFullError(StorageError):
    """The LMDB map is full."""

    hint = "open the store with a larger map_size (ENGINE_MAP_SIZE) or free disk space"


class ReadersFullError(StorageError):
    """Too many concurrent LMDB readers."""

    hint = "raise max_readers or close idle processes/threads that hold read transactions"


class ForkedStoreError(StorageError):
    """A store opened in a parent process was used in a forked child."""

    hint = "call engine.open() again in the child process after fork()"


class ClosedStoreError(StorageError):
    """The store was closed."""


class NativeExtensionError(EngineError, ImportError):
    """A compiled kernel is missing: the engine refuses to run slow code silently."""

    hint = (
        "build the extensions (make build / pip install -e .) or set ENGINE_PURE=1 to use the reference path"
    )


class RemoteError(EngineError):
    """RedDB answered with an error, or could not be reached.

    `status` is the HTTP status code, or None when no response arrived.
    """

    def __init__(self, message: str = "", *, status: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class AuthError(RemoteError):
    """RedDB rejected the token (HTTP 401)."""

    hint = "set REDDB_TOKEN to the server's REDDB_ADMIN_TOKEN"


class RemoteUnavailableError(RemoteError, ConnectionError):
    """RedDB could not be reached (connection refused, reset, DNS)."""


class RemoteTimeoutError(RemoteError, TimeoutError):
    """RedDB did not answer within the timeout."""


class SyncError(EngineError):
    """Replication to RedDB cannot make progress."""


class MigrationError(EngineError):
    """A migration failed, or its dependencies cannot be satisfied."""
