"""The one error type for bad user input across costlaw.

Every package raises a subclass of `CostlawError` for input a user can fix (a flag, a config field,
a spec key, a data column). Its message is one line that names the field and the fix; the CLI prints
it and exits 2 without a traceback. Anything else is a bug and keeps its traceback.
"""


class CostlawError(ValueError):
    """Bad input from a user. The message is one line: `field: problem; fix`."""


class ConfigError(CostlawError):
    """A config field is invalid. `field` is its dotted path, so callers can prefix it."""

    def __init__(self, field: str, problem: str):
        self.field, self.problem = field, problem
        super().__init__(f"{field}: {problem}")

    def under(self, prefix: str) -> "ConfigError":
        """The same error with the field path placed under `prefix` (e.g. `model.`)."""
        return ConfigError(f"{prefix}.{self.field}" if prefix else self.field, self.problem)
