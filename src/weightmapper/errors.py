"""weightmapper's exceptions: one base class, a few subclasses callers can catch.

Every message says what was found, what was expected and what to do next.
"""

from __future__ import annotations


class WeightMapperError(Exception):
    """Base class of every error weightmapper raises on purpose."""


class CheckpointNotFoundError(WeightMapperError, FileNotFoundError):
    """A checkpoint file, shard or index named by the user or an index does not exist."""


class CheckpointFormatError(WeightMapperError, ValueError):
    """A file is not a readable checkpoint: wrong format, truncated, corrupt or inconsistent."""


class UnsafeCheckpointError(WeightMapperError):
    """A pickle needs globals outside torch's safe list; loading it would run its code.

    ``globals`` lists the offending ``module.name`` strings.
    """

    def __init__(self, message: str, globals_found: list[str] | None = None) -> None:
        super().__init__(message)
        self.globals = list(globals_found or [])


class KeyCollisionError(WeightMapperError, ValueError):
    """A rename or mapping would put two source tensors onto one target name."""

    def __init__(self, message: str, collisions: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.collisions = dict(collisions or {})


class MappingError(WeightMapperError, ValueError):
    """Bad mapping input or settings: unknown strategy, weight key, transform or buffer mode."""


class SettingsError(MappingError):
    """Mapper settings are invalid; ``problems`` lists every problem found at once."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])


class TransformError(WeightMapperError, ValueError):
    """A tensor transform cannot be applied to the tensor it was given."""


class ConfigError(WeightMapperError, ValueError):
    """A job configuration is invalid; ``problems`` lists every problem found at once."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])


class OutputError(WeightMapperError, OSError):
    """An output could not be written (disk full, permission, would overwrite an input)."""


class ValidationFailed(WeightMapperError):
    """A converted checkpoint failed a check the user asked to be enforced."""


class ForwardError(WeightMapperError, RuntimeError):
    """A network's forward pass failed on the input it was given (``side`` says which)."""

    def __init__(self, message: str, side: str = "") -> None:
        super().__init__(message)
        self.side = side
