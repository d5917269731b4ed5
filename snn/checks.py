"""The one way a rule on a config value is written, used by every class that takes values: neurons, encoders,
data, models. A leaf: it imports nothing, so those classes import neither Hydra nor Lightning for it."""


class ConfigError(ValueError):
    """A config value outside what is allowed; its message is one line naming the key."""


class InvalidValue(ConfigError):
    """Raised by the constructors, under their argument's name; `validate` prefixes the config group."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")


def not_importable(key: str, target, error: ImportError) -> ConfigError:
    """A `_target_` that cannot be imported (Hydra's ImportError: its first line names the target, its second the
    reason), as one line: most often a class of the user's own whose folder is not on PYTHONPATH."""
    lines = str(error).splitlines()
    reason = lines[1] if len(lines) > 1 else lines[0] if lines else type(error).__name__
    return ConfigError(
        f"{key}._target_={target!r} cannot be imported ({reason}): a class of your own must be importable, e.g. "
        "PYTHONPATH=<the folder holding its module>"
    )


def require(ok: bool, key: str, value, allowed: str) -> None:
    """The one way a rule on a config value is written: in the class that takes the value."""
    if not ok:
        raise InvalidValue(key, value, allowed)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_count(value, minimum: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum
