"""RINGRIFT_* environment overrides, applied to the raw config data before validation."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ConfigError

__all__ = ["ENV_VARS", "apply_env_overrides"]

KeyPath = tuple[str | int, ...]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected true or false (or 1/0, yes/no, on/off)")


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError("expected a number of seconds > 0")
    return value


def _percent(raw: str) -> float:
    try:
        value = float(raw.strip().removesuffix("%"))
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 100):
        raise ValueError("expected a disk usage percentage > 0 and <= 100")
    return value


def _copies(raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError("expected a whole number of copies >= 1")
    return value


def _token(raw: str) -> str:
    return raw.strip()


# variable -> (config path it overrides, parser). The seed's variables plus the cluster token.
ENV_VARS: dict[str, tuple[KeyPath, Callable[[str], Any]]] = {
    "RINGRIFT_AUTO_SYNC_ENABLED": (("auto_sync", "enabled"), _bool),
    "RINGRIFT_SYNC_INTERVAL": (("auto_sync", "interval_seconds"), _seconds),
    "RINGRIFT_SYNC_PUSH_THRESHOLD": (("push", "push_percent"), _percent),
    "RINGRIFT_MIN_COPIES_BEFORE_DELETE": (("push", "min_copies_before_delete"), _copies),
    "RINGRIFT_CLUSTER_TOKEN": (("token",), _token),
}


def apply_env_overrides(data: dict[str, Any], env: Mapping[str, str]) -> dict[KeyPath, str]:
    """Write set, non-empty RINGRIFT_* values into ``data``; return {config path: variable name}.

    An empty variable counts as unset. A value that cannot be parsed raises ConfigError naming the
    variable. If the section it belongs to is not a mapping in the YAML, the override is skipped and
    validation reports the YAML problem.
    """
    sources: dict[KeyPath, str] = {}
    for name, (path, parse) in ENV_VARS.items():
        raw = env.get(name)
        if raw is None or not raw.strip():
            continue
        try:
            value = parse(raw)
        except ValueError as exc:
            shown = "<hidden>" if name == "RINGRIFT_CLUSTER_TOKEN" else repr(raw)
            raise ConfigError(f"{exc}, got {shown}", field=".".join(map(str, path)), env_var=name) from None
        target = data
        for part in path[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                break
        else:
            target[path[-1]] = value
            sources[path] = name
    return sources
