"""Command-line flags derived from a pydantic model's fields, so names, types, defaults, help and choices
are written once, on the field (server/settings.py's Settings, server/cli.py's DownloadOptions).

A field becomes a flag when its annotation carries `Flag(...)`. The same flag names (with `-` or `_`) are
the keys of a `--config` file (server/config_file.py), in the flag's unit.
"""

from __future__ import annotations

import argparse
import math
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

T = TypeVar("T", int, float)

_MiB = 1024**2


@dataclass(frozen=True)
class Flag:
    """Marks a settings field as the flag `--name`.

    `scale`: the field holds the flag's value times this (e.g. 3600 for a flag in hours and a field in
    seconds). `repeat`: the flag may be given several times; the field receives the list.
    """

    name: str
    scale: float = 1.0
    repeat: bool = False
    metavar: str | None = None

    @property
    def dest(self) -> str:
        """The attribute argparse stores the value under."""
        return self.name.replace("-", "_")


def flag_of(info: FieldInfo) -> Flag | None:
    return next((m for m in info.metadata if isinstance(m, Flag)), None)


def flagged_fields(model: type[BaseModel]) -> dict[str, tuple[FieldInfo, Flag]]:
    """Field name -> (field, flag), in the model's order, for every field that is a flag."""
    found = {}
    for name, info in model.model_fields.items():
        flag = flag_of(info)
        if flag is not None:
            found[name] = (info, flag)
    return found


def positive(kind: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type for limits and durations: 0 or less would refuse everything (or keep nothing)."""
    def parse(text: str) -> T:
        value = kind(text)
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its "invalid int value" message
    return parse


def _without_none(annotation: Any) -> Any:
    """`X | None` -> X (a flag that is not given leaves the field at its default)."""
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        return rest[0] if len(rest) == 1 else str
    return annotation


def _is_positive(info: FieldInfo) -> bool:
    return any(getattr(constraint, "gt", None) == 0 for constraint in info.metadata)  # Field(gt=0)


def _default_text(info: FieldInfo, flag: Flag) -> str:
    """The default in the flag's unit, for --help; empty when there is nothing to say."""
    default = info.get_default(call_default_factory=True)
    if default is None or isinstance(default, bool) or default in ((), ""):
        return ""
    if isinstance(default, int | float) and flag.scale != 1.0:
        default = default / flag.scale
    if isinstance(default, int) and flag.name.endswith("bytes") and default % _MiB == 0:
        mib = default // _MiB
        return f"{mib // 1024} GiB" if mib % 1024 == 0 else f"{mib} MiB"
    if isinstance(default, int) and flag.name.endswith("pixels") and math.isqrt(default) ** 2 == default:
        return f"{math.isqrt(default)}x{math.isqrt(default)}"
    if isinstance(default, float) and default.is_integer():
        return f"{default:g}"
    return str(default)


def add_flags(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """One argparse option per flagged field of `model`; a flag not given is absent from the namespace."""
    for info, flag in flagged_fields(model).values():
        kwargs: dict[str, Any] = {"dest": flag.dest, "default": argparse.SUPPRESS}
        kind = _without_none(info.annotation)
        if flag.repeat:
            kwargs["action"] = "append"
        elif kind is bool:
            kwargs["action"] = "store_true"
        elif get_origin(kind) is Literal:
            kwargs["choices"] = get_args(kind)
        elif kind in (int, float):
            kwargs["type"] = positive(kind) if _is_positive(info) else kind
        elif kind is Path:
            kwargs["type"] = Path
        default = _default_text(info, flag)
        help_text = (info.description or "").replace("%", "%%")
        kwargs["help"] = f"{help_text} (default {default})" if default else help_text
        if flag.metavar:
            kwargs["metavar"] = flag.metavar
        parser.add_argument(f"--{flag.name}", **kwargs)


def field_values(model: type[BaseModel], given: Mapping[str, Any]) -> dict[str, Any]:
    """Flag values (keyed by flag name or dest) -> field values, converted from the flag's unit."""
    by_key = {}
    for field_name, (_, flag) in flagged_fields(model).items():
        by_key[flag.name] = by_key[flag.dest] = (field_name, flag)
    values = {}
    for key, value in given.items():
        if key not in by_key:
            known = ", ".join(sorted({flag.name for _, flag in by_key.values()}))
            raise ValueError(f"unknown setting {key!r}; the names are: {known}")
        field_name, flag = by_key[key]
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        values[field_name] = value * flag.scale if is_number and flag.scale != 1.0 else value
    return values
