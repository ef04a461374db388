"""How an exception is named in events, ``/health`` details and log lines."""

from __future__ import annotations


def describe(exc: BaseException) -> str:
    """``Type: message``, or just ``Type`` when the message is empty."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
