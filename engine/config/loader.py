"""Load distributed_hosts.yaml: YAML with line tracking, RINGRIFT_* overrides, one-line errors.

The YAML is composed (SafeLoader) into nodes, and built into plain data by hand so that every key
path ``("hosts", "gpu-1", "port")`` and list item ``("sync_routing", "priority_hosts", 0)`` remembers
its line. Pydantic validates the data; the first error (the one earliest in the file) is mapped back
to the deepest known path and raised as a :class:`ConfigError`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .env import apply_env_overrides
from .errors import ConfigError, FieldProblem, one_line
from .schema import ClusterConfig

__all__ = ["load_config", "load_config_text"]

KeyPath = tuple[str | int, ...]
_MERGE_TAG = "tag:yaml.org,2002:merge"
_SECTIONS = ("sync_routing", "auto_sync", "bandwidth_limits", "push", "membership", "transfer",
             "hosts")


def load_config(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None, base_dir: str | os.PathLike[str] | None = None
) -> ClusterConfig:
    """Load and validate a cluster config file (``cfg.source`` is its absolute path).

    ``env`` supplies the RINGRIFT_* overrides (default ``os.environ``); relative ``data_root``s
    resolve against ``base_dir`` (default: the config file's directory). Raises ConfigError.
    """
    file = os.fspath(path)
    try:
        text = Path(file).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError("cannot read: not UTF-8 text", file=file) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=file) from None
    if base_dir is None:
        base_dir = Path(os.path.abspath(file)).parent
    return _load(text, file, Path(os.path.abspath(file)), env, base_dir)


def load_config_text(
    text: str,
    source: str | os.PathLike[str] = "<config>",
    env: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> ClusterConfig:
    """Like :func:`load_config` for YAML text already in memory; ``source`` names it in errors."""
    return _load(text, os.fspath(source), Path(os.fspath(source)), env, base_dir)


def _load(
    text: str,
    file: str,
    source_path: Path,
    env: Mapping[str, str] | None,
    base_dir: str | os.PathLike[str] | None,
) -> ClusterConfig:
    data, lines = _parse_yaml(text, file)
    root_line = lines.get((), 1)
    if data is None:
        raise ConfigError("config is empty: expected a mapping with `token:` and `hosts:`", file=file, line=root_line)
    if not isinstance(data, dict):
        raise ConfigError(
            f"the top level must be a mapping of settings (token:, hosts:, ...), got a {_kind(data)}",
            file=file, line=root_line,
        )
    if "source" in data:
        raise ConfigError("unknown key (the config's source path is set by the loader)",
                          file=file, line=lines.get(("source",)), field="source")
    for section in _SECTIONS:
        if section in data and data[section] is None:  # a section whose entries are all commented out
            data[section] = {}
    try:
        env_sources = apply_env_overrides(data, os.environ if env is None else env)
    except ConfigError as exc:
        exc.file = file  # str() still names only the variable
        raise
    data["source"] = source_path
    base = Path(os.path.abspath(base_dir if base_dir is not None else Path.cwd()))
    try:
        config = ClusterConfig.model_validate(data, context={"base_dir": base})
    except ValidationError as exc:
        raise _first_error(exc, file, lines, env_sources) from None
    if not (config.token and config.token.strip()):
        raise ConfigError(
            "no cluster token: set `token:` in the config or RINGRIFT_CLUSTER_TOKEN",
            file=file, line=lines.get(("token",)), field="token",
        )
    return config


# ------------------------------------------------------------------------------------------ YAML
def _parse_yaml(text: str, file: str) -> tuple[Any, dict[KeyPath, int]]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        builder = _Builder(loader, file)
        builder.lines[()] = node.start_mark.line + 1
        return builder.build(node, ()), builder.lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(part for part in (exc.context, exc.problem) if part) or str(exc)
        raise ConfigError(message, file=file, line=mark.line + 1 if mark else None, field="yaml") from None
    except yaml.YAMLError as exc:
        raise ConfigError(one_line(exc), file=file, field="yaml") from None
    finally:
        loader.dispose()


class _Builder:
    """Turns composed nodes into plain data, recording the line of every key and list item.

    Mapping keys are kept as written (``yes:`` stays the string "yes", ``8770:`` the string "8770").
    Merge keys (``<<: *anchor``) are honoured; duplicate keys are errors.
    """

    def __init__(self, loader: yaml.SafeLoader, file: str) -> None:
        self.loader = loader
        self.file = file
        self.lines: dict[KeyPath, int] = {}
        self._active: set[int] = set()

    def _error(self, node: Node, path: KeyPath, problem: str) -> ConfigError:
        return ConfigError(problem, file=self.file, line=node.start_mark.line + 1, field=_dotted(path) or "yaml")

    def build(self, node: Node, path: KeyPath) -> Any:
        if isinstance(node, ScalarNode):
            return self.loader.construct_object(node, deep=True)
        if id(node) in self._active:
            raise self._error(node, path, "recursive alias")
        self._active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                items = []
                for index, item in enumerate(node.value):
                    self.lines[path + (index,)] = item.start_mark.line + 1
                    items.append(self.build(item, path + (index,)))
                return items
            assert isinstance(node, MappingNode)
            return self._build_mapping(node, path)
        finally:
            self._active.discard(id(node))

    def _build_mapping(self, node: MappingNode, path: KeyPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.extend(value_node.value if isinstance(value_node, SequenceNode) else [value_node])
                continue
            if not isinstance(key_node, ScalarNode):
                raise self._error(key_node, path, "mapping keys must be plain names")
            key = key_node.value
            if key in result:
                first = self.lines.get(path + (key,))
                raise self._error(key_node, path + (key,), f"duplicate key (first given on line {first})")
            self.lines[path + (key,)] = key_node.start_mark.line + 1
            result[key] = self.build(value_node, path + (key,))
        for merge in merges:  # explicit keys win; earlier merged mappings win over later ones
            if not isinstance(merge, MappingNode):
                raise self._error(merge, path, "`<<:` must merge a mapping")
            sub = _Builder(self.loader, self.file)
            sub._active = self._active
            merged = sub.build(merge, path)
            for key, value in merged.items():
                result.setdefault(key, value)
            for key_path, line in sub.lines.items():
                self.lines.setdefault(key_path, line)
        return result


# ---------------------------------------------------------------------------------------- errors
def _first_error(
    exc: ValidationError, file: str, lines: dict[KeyPath, int], env_sources: dict[KeyPath, str]
) -> ConfigError:
    candidates = []
    for order, error in enumerate(exc.errors()):
        loc = tuple(error["loc"])
        path, problem = _describe(error, loc, lines, env_sources)
        env_var = env_sources.get(path)
        line = None if env_var else _line_for(path, lines)
        candidates.append((0 if env_var else 1, line or 0, order, path, problem, env_var, line))
    _, _, _, path, problem, env_var, line = min(candidates)
    return ConfigError(problem, file=file, line=line, field=_dotted(path) or None, env_var=env_var)


def _describe(
    error: Any, loc: KeyPath, lines: dict[KeyPath, int], env_sources: dict[KeyPath, str]
) -> tuple[KeyPath, str]:
    kind, message, value = error["type"], error["msg"], error.get("input")
    inner = (error.get("ctx") or {}).get("error")
    if isinstance(inner, FieldProblem):
        paths = [loc + p for p in inner.paths]
        chosen = next((p for p in paths if p in env_sources), None) or next((p for p in paths if p in lines), paths[0])
        return chosen, inner.message
    if kind == "extra_forbidden":
        return loc, _unknown_key(loc)
    if kind == "missing":
        return loc, "required key is missing"
    if isinstance(inner, ValueError):
        message = str(inner)
    elif kind in ("dict_type", "model_type"):
        message = "should be a mapping of settings (key: value)"
    elif kind == "list_type":
        message = "should be a list"
    elif message.startswith("Input should be"):
        message = "should be" + message[len("Input should be"):]
    if kind not in ("value_error",) and "got " not in message and loc[-1:] != ("token",) and not isinstance(
        value, (dict, list)
    ):
        shown = repr(value)
        message += f", got {shown if len(shown) <= 60 else shown[:57] + '...'}"
    return loc, message


def _unknown_key(loc: KeyPath) -> str:
    model = _model_at(loc[:-1])
    if model is None:
        return "unknown key"
    known = [name for name, field in model.model_fields.items() if not field.exclude]
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    if close:
        return f"unknown key (did you mean {close[0]!r}?)"
    return f"unknown key (expected one of: {', '.join(known)})"


def _model_at(loc: KeyPath) -> type[BaseModel] | None:
    current: Any = ClusterConfig
    for part in loc + (None,):
        while get_origin(current) is not None and type(None) in get_args(current):  # X | None
            current = next(arg for arg in get_args(current) if arg is not type(None))
        if part is None:
            break
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) in (dict, list):
            current = get_args(current)[-1]
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _line_for(path: KeyPath, lines: dict[KeyPath, int]) -> int | None:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def _dotted(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _kind(value: object) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )

