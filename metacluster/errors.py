"""One error hierarchy for the library, the CLI and the service.

Every error carries a stable machine-readable ``code`` and the HTTP status the
service answers it with (as application/problem+json)::

    MetaClusterError (500, "internal")
    ├── InputError (422, "invalid_input")         bad user input in general
    │   ├── FormatError (422, "unsupported_format")   not a KAN checkpoint we can read
    │   │   ├── UnsafeCheckpointError (422, "unsafe_checkpoint")  needs unpickling code
    │   │   └── ArtifactError (422, "invalid_artifact")   corrupt, truncated or inconsistent .mcz
    │   ├── DatasetError (422, "invalid_dataset")     unreadable / inconsistent data
    │   ├── ConfigError (422, "invalid_config")       bad compression / train config
    │   └── IncompatibleError (422, "incompatible")   model and data/config do not fit
    └── CancelledError (409, "cancelled")         a job was cancelled between steps
"""

from __future__ import annotations


class MetaClusterError(Exception):
    """Base of every MetaCluster error.

    A subclass states its code and status as class keywords, which it inherits
    unless it names its own: ``class FormatError(InputError, code="unsupported_format")``.
    """

    code: str = "internal"
    status: int = 500

    def __init_subclass__(cls, *, code: str | None = None, status: int | None = None) -> None:
        super().__init_subclass__()
        if code is not None:
            cls.code = code
        if status is not None:
            cls.status = status

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class InputError(MetaClusterError, code="invalid_input", status=422):
    """Bad user input in general."""


class FormatError(InputError, code="unsupported_format"):
    """Not a KAN checkpoint we can read."""


class UnsafeCheckpointError(FormatError, code="unsafe_checkpoint"):
    """A checkpoint that only unpickling code could load."""


class DatasetError(InputError, code="invalid_dataset"):
    """Unreadable or inconsistent data."""


class ConfigError(InputError, code="invalid_config"):
    """A bad compression or training config."""


class IncompatibleError(InputError, code="incompatible"):
    """Model and data or config do not fit together."""


class ArtifactError(FormatError, code="invalid_artifact"):
    """A corrupt or unknown artifact."""


class CancelledError(MetaClusterError, code="cancelled", status=409):
    """A job was cancelled between steps."""


__all__ = [
    "ArtifactError",
    "CancelledError",
    "ConfigError",
    "DatasetError",
    "FormatError",
    "IncompatibleError",
    "InputError",
    "MetaClusterError",
    "UnsafeCheckpointError",
]
