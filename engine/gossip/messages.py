"""Gossip messages: their shapes, and the checks every incoming one passes before it is used.

    request   {node, manifest_id, seq, since, peer_id, have?, quiet_until?}
    answer    a delta (``complete`` required) + {want_since, disk_percent?, backpressure?}
    delta     {node, manifest_id, since, seq, complete, artifacts?, replicas?, deletions?}
    reply     {node, cursor, merged}              (to a follow-up delta)

A delta is one page of ``ClusterManifest.changes_since`` keeping only the rows the receiver
can take (``Gossip`` filters them); a table without rows is left out, so an idle exchange is
a few hundred bytes. Every check raises :class:`ProtocolError` with one line saying what is
wrong; the HTTP layer answers it with 400.
"""

from __future__ import annotations

from typing import Any

from engine.paths import DATA_TYPES, UnsafePath, check_relative

DELTA_TABLES = ("artifacts", "replicas", "deletions")
"""The tables a gossip delta carries (the ones ``merge_peer`` takes rows of)."""

_NUM = (int, float)
_OPT_STR, _OPT_INT, _OPT_NUM = (str, type(None)), (int, type(None)), (int, float, type(None))
_ROW_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "artifacts": {"data_type": str, "path": str, "config_key": _OPT_STR, "size": int,
                  "sha256": str, "mtime": _NUM, "origin": str, "source_size": _OPT_INT,
                  "source_mtime_ns": _OPT_INT, "removed": int, "seq": int},
    "replicas": {"data_type": str, "path": str, "node": str, "sha256": str,
                 "verified_at": _OPT_NUM, "removed": int, "seq": int},
    "deletions": {"data_type": str, "path": str, "node": str, "sha256": str, "size": int,
                  "vouched_by": str, "deleted_at": _NUM, "seq": int},
}


class ProtocolError(ValueError):
    """A gossip message that is malformed, or not meant for this node."""


def _field(msg: dict[str, Any], name: str, kind: type | tuple[type, ...],
           where: str = "message") -> Any:
    if name not in msg:
        raise ProtocolError(f"{where} lacks {name!r}")
    value = msg[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds and name != "removed":
        raise ProtocolError(f"{where}: {name!r} must be {_names(kinds)}, not a boolean")
    if not isinstance(value, kinds):
        raise ProtocolError(f"{where}: {name!r} must be {_names(kinds)},"
                            f" not {type(value).__name__}")
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        raise ProtocolError(f"{where}: {name!r} must not be negative")
    return value


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join("null" if k is type(None) else k.__name__ for k in kinds)


def _name(msg: dict[str, Any], field: str) -> str:
    value = _field(msg, field, str)
    if not value or len(value) > 200:
        raise ProtocolError(f"{field!r} must be a non-empty string of at most 200 characters")
    return value


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ProtocolError(f"a gossip {what} must be a JSON object")
    return body


def check_request(body: Any) -> dict[str, Any]:
    """A request as sent by ``Gossip.request``; returns it with optional fields filled."""
    msg = _object(body, "request")
    _name(msg, "node")
    _name(msg, "manifest_id")
    _field(msg, "seq", int)
    _field(msg, "since", int)
    out = {**msg, "peer_id": msg.get("peer_id"), "have": msg.get("have"),
           "quiet_until": msg.get("quiet_until")}
    _field(out, "peer_id", _OPT_STR)
    _field(out, "have", _OPT_INT)
    _field(out, "quiet_until", _OPT_INT)
    return out


def check_delta(body: Any, sender: str | None = None) -> dict[str, Any]:
    """A delta (an answer's rows or a follow-up) of ``sender`` (when given), rows included."""
    msg = _object(body, "delta")
    node = _name(msg, "node")
    if sender is not None and node != sender:
        raise ProtocolError(f"the delta is from {node!r}, not {sender!r}")
    _name(msg, "manifest_id")
    since, seq = _field(msg, "since", int), _field(msg, "seq", int)
    if since > seq:
        raise ProtocolError(f"since ({since}) is after seq ({seq})")
    for table, fields in _ROW_FIELDS.items():
        rows = msg.get(table, [])
        if not isinstance(rows, list):
            raise ProtocolError(f"{table!r} must be a list")
        for i, row in enumerate(rows):
            where = f"{table}[{i}]"
            if not isinstance(row, dict):
                raise ProtocolError(f"{where} must be an object")
            for name, kind in fields.items():
                _field(row, name, kind, where)
            _check_names(row, where)
            if row["seq"] <= since or row["seq"] > seq:
                raise ProtocolError(f"{where}: seq {row['seq']} is outside ({since}, {seq}]")
    return msg


def check_answer(body: Any, sender: str) -> dict[str, Any]:
    """An answer of ``sender`` to our request: a delta plus ``want_since``."""
    msg = check_delta(body, sender)
    _field(msg, "complete", bool)
    _field({"want_since": msg.get("want_since")}, "want_since", _OPT_INT)
    _field({"disk_percent": msg.get("disk_percent")}, "disk_percent", _OPT_NUM)
    _field({"backpressure": msg.get("backpressure")}, "backpressure", _OPT_STR)
    return msg


def check_reply(body: Any, sender: str) -> int:
    """The reply to a follow-up delta; returns the sender's cursor of us."""
    msg = _object(body, "reply")
    if _name(msg, "node") != sender:
        raise ProtocolError(f"the reply is from {msg['node']!r}, not {sender!r}")
    _field(msg, "merged", int)
    return int(_field(msg, "cursor", int))


def _check_names(row: dict[str, Any], where: str) -> None:
    """Names that end up as paths on disk are checked as the HTTP API checks them."""
    if row["data_type"] not in DATA_TYPES:
        raise ProtocolError(f"{where}: unknown data type {row['data_type']!r}")
    try:
        check_relative(row["path"])
    except UnsafePath as exc:
        raise ProtocolError(f"{where}: {exc}") from None
    for name in ("origin", "node"):
        if name in row and not row[name]:
            raise ProtocolError(f"{where}: {name!r} is empty")
