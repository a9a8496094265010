"""The one root of expected failures.

Anything a user can cause (bad input, a stopped emulator, missing credentials) raises a
subclass of :class:`CdpError`. The CLI turns it into one line on stderr and an exit code in
one place (``provisioner.cli.main``). Everything else is a bug and keeps its traceback.
"""


class CdpError(Exception):
    """An expected failure of an operation: exit code 1."""

    exit_code = 1


class UsageError(CdpError):
    """Bad input or usage (a bad name, a missing path, an unknown CDP): exit code 2."""

    exit_code = 2


class ConfigError(UsageError):
    """cdp.toml is missing a key, has a bad value or cannot be parsed."""

    def __init__(self, path, key, message):
        self.path = path
        self.key = key
        where = f"{path}: {key}" if key else str(path)
        super().__init__(f"{where}: {message}")
