"""Byte sizes in config files: ``parse_size("500MB")`` -> 500_000_000."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ["parse_size"]

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50,
}
_SIZE_RE = re.compile(r"^\s*((?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(value: int | float | str) -> int:
    """Bytes from an int or a size string: ``"500MB"`` -> 500_000_000, ``"2GiB"`` -> 2**31.

    Decimal units (KB, MB, GB, TB, PB) are powers of 1000, binary ones (KiB, MiB, ...) powers of 1024;
    units are case-insensitive; a bare number means bytes. Raises ValueError for anything negative,
    fractional in bytes, or unparseable.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 500MB, 2GiB or a byte count, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative, got {value}")
        return value
    if isinstance(value, float):
        if not value.is_integer() or value < 0:
            raise ValueError(f"expected a whole, non-negative number of bytes, got {value!r}")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a size like 500MB, 2GiB or a byte count, got {value!r}")
    match = _SIZE_RE.match(value)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(
            f"expected a size like 500MB, 2GiB or a byte count (units: B, KB, MB, GB, TB, KiB, MiB, GiB, "
            f"TiB), got {value!r}"
        )
    try:
        amount = Decimal(match.group(1)) * _SIZE_UNITS[unit]
    except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
        raise ValueError(f"expected a size, got {value!r}") from None
    if amount != amount.to_integral_value():
        raise ValueError(f"size {value!r} is not a whole number of bytes")
    return int(amount)
