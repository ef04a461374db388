"""Errors raised while loading or querying the cluster configuration."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ConfigError", "FieldProblem", "UnknownHostError", "one_line"]


def one_line(text: object) -> str:
    """Collapse all whitespace (including newlines) so a message fits on one line."""
    return " ".join(str(text).split())


class ConfigError(Exception):
    """A configuration problem, pointing at where it was made.

    ``str(err)`` is always one line, one of::

        <file>:<line>: <dotted.field>: <problem>     a problem in the YAML file
        <file>: <dotted.field>: <problem>             no line to point at (e.g. a missing key)
        <VARNAME>: <problem>                          a bad RINGRIFT_* environment variable
        <file>: cannot read: <reason>                 the file could not be read

    Attributes: ``file`` (str | None, the config path as given), ``line`` (1-based, or None),
    ``field`` (dotted config field such as ``hosts.gpu-1.port``; ``yaml`` for syntax errors; None when
    the problem concerns the whole file), ``env_var`` (the environment variable that supplied the bad
    value, or None) and ``problem`` (the bare message).
    """

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        env_var: str | None = None,
    ) -> None:
        self.problem = one_line(problem)
        self.file = file
        self.line = line
        self.field = field
        self.env_var = env_var
        super().__init__(self._format())

    def _format(self) -> str:
        if self.env_var:
            return f"{self.env_var}: {self.problem}"
        parts: list[str] = []
        if self.file is not None:
            parts.append(self.file if self.line is None else f"{self.file}:{self.line}")
        if self.field:
            parts.append(self.field)
        parts.append(self.problem)
        return one_line(": ".join(parts))

    def __str__(self) -> str:
        return self._format()


class FieldProblem(ValueError):
    """A cross-field validation failure raised inside a model validator.

    ``paths`` are candidate field paths relative to the model that raised it, most likely culprit
    first; the loader blames the first one that was set by an environment variable, else the first one
    written in the YAML file, else the first one. Pydantic wraps it in a ValidationError and keeps the
    instance in ``error["ctx"]["error"]``.
    """

    def __init__(self, paths: Sequence[tuple[str | int, ...]], message: str) -> None:
        super().__init__(message)
        self.paths = [tuple(p) for p in paths] or [()]
        self.message = message


class UnknownHostError(KeyError):
    """``ClusterConfig.host(name)`` for a name not in ``hosts:``; str() is a readable sentence."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = list(known)

    def __str__(self) -> str:
        shown = ", ".join(self.known[:12]) + (", ..." if len(self.known) > 12 else "")
        return f"unknown host {self.name!r} (configured hosts: {shown or 'none'})"
