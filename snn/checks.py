"""The one way a rule on a config value is written, used by every class that takes values: neurons, encoders,
data, models. A leaf: it imports nothing, so those classes import neither Hydra nor Lightning for it."""


class ConfigError(ValueError):
    """A config value outside what is allowed; its message is one line naming the key."""


class InvalidValue(ConfigError):
    """Raised by the constructors, under their argument's name; `validate` prefixes the config group."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")


def require(ok: bool, key: str, value, allowed: str) -> None:
    """The one way a rule on a config value is written: in the class that takes the value."""
    if not ok:
        raise InvalidValue(key, value, allowed)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_count(value, minimum: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum
