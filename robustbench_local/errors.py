"""The harness's own bad-input error, raised wherever a config value is checked (lowest floor: imports nothing)."""
from __future__ import annotations


class ConfigError(ValueError):
    """A config key is missing or has a value the suite cannot use."""
