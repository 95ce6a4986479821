"""`vace serve --config FILE`: settings from a TOML or JSON file, below flags and the environment.

The keys are the flag names without the leading dashes (`-` or `_` alike), in the flags' units, e.g.

    port = 8080
    retention-hours = 48
    api-key = ["first", "second"]
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from server.flags import field_values


def read_config_file(path: Path | str) -> dict[str, Any]:
    """The file's table as given (flag names -> values); TOML unless the name ends in .json."""
    text = Path(path).read_text(encoding="utf-8")
    data = json.loads(text) if Path(path).suffix.lower() == ".json" else tomllib.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a table of settings, got {type(data).__name__}")
    return data


class ConfigFileSource(PydanticBaseSettingsSource):
    """A pydantic-settings source for one config file (none: it contributes nothing)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | str | None) -> None:
        super().__init__(settings_cls)
        try:
            self._values = field_values(settings_cls, read_config_file(path)) if path else {}
        except (OSError, ValueError) as exc:  # ValueError: TOML, JSON, or a key that is no setting
            raise ValueError(f"config file {path}: {exc}") from exc

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        # Keyed as the environment source keys them (a field's string alias, else its name), so the two
        # merge by priority instead of one arriving as an extra input beside the other.
        fields = self.settings_cls.model_fields
        return {_input_key(fields[name], name): value for name, value in self._values.items()}


def _input_key(field: FieldInfo, name: str) -> str:
    alias = field.validation_alias
    return alias if isinstance(alias, str) else name
