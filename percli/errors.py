"""Expected failures. The CLI turns them into one line on stderr and an exit code, never a traceback."""


class PercliError(Exception):
    """An expected failure with a message written for the user. Exit code 1 (data / environment)."""

    exit_code = 1


class ConfigError(PercliError):
    """Invalid configuration: unknown option or key, wrong type, out-of-range value. Exit code 2."""

    exit_code = 2


class DataError(PercliError):
    """Missing, unreadable or malformed data."""


class EnvironmentProblem(PercliError):
    """The machine lacks something: hub access, an offline asset, an optional package."""
