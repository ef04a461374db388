"""Human-readable numbers for the panes: sizes, rates, durations, clock times."""

from __future__ import annotations

import time
from collections.abc import Iterable

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(nbytes: float) -> str:
    """``1536`` -> ``1.5 KiB``; three significant figures at most."""
    value = float(nbytes)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_rate(bps: float) -> str:
    """Bytes per second as MB/s (10^6, as bandwidth limits are configured)."""
    mbps = bps / 1_000_000
    if mbps >= 100:
        return f"{mbps:.0f} MB/s"
    if mbps >= 0.1:
        return f"{mbps:.1f} MB/s"
    return f"{bps / 1000:.0f} kB/s"


def human_duration(seconds: float | None) -> str:
    """``75`` -> ``1m15s``; None -> ``-``."""
    if seconds is None:
        return "-"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def clock(ts: float, utc: bool = False) -> str:
    """``HH:MM:SS`` of a Unix time (local time unless ``utc``)."""
    return time.strftime("%H:%M:%S", time.gmtime(ts) if utc else time.localtime(ts))


_EIGHTHS = " ▏▎▍▌▋▊▉"
_SPARKS = "▁▂▃▄▅▆▇█"


def truncate_left(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells, cut on the left behind ``…`` (keeps a file name)."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    return "…" + text[len(text) - width + 1:] if width > 1 else "…"


def truncate_right(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells, cut on the right behind ``…``."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    return text[:width - 1] + "…"


def block_bar(fraction: float, width: int) -> tuple[str, str]:
    """A bar ``width`` cells wide filled to ``fraction`` (0..1) with eighth blocks.

    Returns ``(filled, empty)``: the block characters and the spaces after them, so the two
    parts can be styled apart.
    """
    width = max(0, width)
    eighths = round(min(1.0, max(0.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    filled = "█" * full + (_EIGHTHS[part] if part else "")
    return filled, " " * (width - len(filled))


def sparkline(values: Iterable[float], top: float, width: int) -> str:
    """The last ``width`` values as ``▁▂▃▄▅▆▇█`` scaled to ``top``, right-aligned in ``width``."""
    tail = list(values)[-width:] if width > 0 else []
    if top <= 0:
        top = max(tail, default=0.0) or 1.0
    top_index = len(_SPARKS) - 1
    marks = "".join(_SPARKS[min(top_index, max(0, round(v / top * top_index)))] for v in tail)
    return marks.rjust(width)
