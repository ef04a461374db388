"""One line of text per event, and the nodes an event is about.

Known types get a hand-written line; any other type (a newer engine's) falls back to
``key=value`` pairs, so the events pane never drops an event it does not know.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ringsync_tui.format import human_bytes
from ringsync_tui.model import EventRow

NODE_FIELDS = ("node", "source", "target", "source_node")
"""Payload fields that name a node."""


def _size(nbytes: Any) -> str:
    return human_bytes(int(nbytes or 0))


def _sync_started(p: Mapping[str, Any]) -> str:
    return (f"{p['source']} → {', '.join(p['targets']) or '-'}: {p['files']} files,"
            f" {_size(p['bytes'])} ({p['reason']}, {p.get('urgency', 'normal')})")


def _sync_completed(p: Mapping[str, Any]) -> str:
    return (f"{p['source']} → {p['target']}: {p['files']} files, {_size(p['bytes'])}"
            f" in {p.get('seconds', 0):.1f}s ({p['reason']}, {p.get('urgency', 'normal')})")


def _sync_failed(p: Mapping[str, Any]) -> str:
    retry = p.get("retry_in_seconds")
    then = "no retry" if retry is None else f"retry in {retry:.0f}s"
    return f"{p['source']} → {p['target']}: {p['artifact']} attempt {p['attempt']}: {p['error']} ({then})"


FORMATS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "DATA_SYNC_STARTED": _sync_started,
    "DATA_SYNC_COMPLETED": _sync_completed,
    "DATA_SYNC_FAILED": _sync_failed,
    "NODE_SUSPECT": lambda p: f"{p['node']} missed {p['misses']} check(s): {p['error']}",
    "NODE_DOWN": lambda p: f"{p['node']} is down after {p['misses']} misses: {p['error']}",
    "NODE_RECOVERED": lambda p: f"{p['node']} is back after {p['down_seconds']:.0f}s down",
    "SYNC_PAUSED": lambda p: f"sync paused on {p['node']} by {p['requested_by']}",
    "SYNC_RESUMED": lambda p: f"sync resumed on {p['node']} by {p['requested_by']}",
    "PRIORITY_SYNC_REQUESTED": lambda p: (
        f"priority sync of {p['source_node']} ({p['reason']}"
        + (f", {p['config_key']})" if p.get("config_key") else ")")),
    "BACKPRESSURE_ACTIVATED": lambda p: (
        f"{p['node']} holds non-urgent syncs: disk {p['disk_percent']:.0f}%,"
        f" queue {p['queue_depth']} ({p['reason']})"),
    "BACKPRESSURE_RELEASED": lambda p: f"{p['node']} accepts syncs again",
    "REPLICAS_VERIFIED": lambda p: (
        f"{p['node']} re-hashed {p['checked']} copies: {p['matched']} ok,"
        f" {p['mismatched']} changed, {p['missing']} missing ({p['seconds']:.1f}s,"
        f" by {p['requested_by']})"),
    "REPLICA_QUARANTINED": lambda p: (
        f"{p['node']}: {p['artifact']} "
        + ("is missing" if p.get("actual_sha256") is None else
           f"hash {p['actual_sha256'][:12]} != {p['expected_sha256'][:12]}")
        + (f", moved to {p['quarantined_to']}" if p.get("quarantined_to") else "")
        + "; it no longer counts as a copy"),
    "DISK_PRESSURE_CHANGED": lambda p: (
        f"{p['node']} disk {p['percent']:.0f}%: {p['previous']} → {p['level']}"
        f" ({_size(p['used_bytes'])} of {_size(p['total_bytes'])})"),
    "ARTIFACT_DELETED": lambda p: (
        f"{p['node']} deleted {p['artifact']} ({_size(p['bytes'])}): vouched for live by"
        f" {', '.join(p['vouched_by'])}"),
    "CLEANUP_COMPLETED": lambda p: (
        f"{p['node']} cleanup: {p['deleted']} deleted, {_size(p['freed_bytes'])} freed,"
        f" disk {p['percent_before']:.0f}% → {p['percent_after']:.0f}%"
        + (f"; {p['short_of_copies']} short of {p['required']} vouched copies"
           if p.get("short_of_copies") else "")
        + (f", {p['unfinished']} unfinished" if p.get("unfinished") else "")
        + (f", {p['busy']} being pushed" if p.get("busy") else "")),
    "ARTIFACT_SAFE": lambda p: (
        f"{p['node']}: {p['artifact']} safe on {', '.join(p['durable_on'])}"
        f" after {p['queued_seconds']:.1f}s queued"),
    "CIRCUIT_BREAKER_CHANGED": lambda p: (
        f"{p['node']} → {p['target']}: breaker {p['previous']} → {p['state']}"
        + (f" after {p['failures']} failures" if p['state'] == "open" else "")
        + (f", probe in {p['retry_in_seconds']:.0f}s" if p.get('retry_in_seconds') else "")),
    "HOOK_FAILED": lambda p: (
        f"{p['node']}: hook {p['hook']} on {p['event']}"
        + (f" for {p['artifact']}" if p.get("artifact") else "")
        + (f" exited {p['exit_code']}" if p.get("exit_code") is not None else " did not finish")
        + f": {p['error']}"),
    "COMPONENT_FAILED": lambda p: (
        f"{p['node']}: {p['component']} failed ({p['streak']}x): {p['error']}"
        + (f", restart in {p['restart_in_seconds']:.0f}s"
           if p.get("restart_in_seconds") is not None else "")),
    "COMPONENT_RECOVERED": lambda p: (
        f"{p['node']}: {p['component']} recovered after {p['failures']} failures"
        f" ({p['down_seconds']:.0f}s)"),
    "MODEL_PROMOTED": lambda p: f"model {p['path']} promoted ({p['config_key']}, {_size(p['size'])})",
    "MODEL_DISTRIBUTED": lambda p: (
        f"model {p['path']} on {len(p['nodes'])} nodes via {p['transport']}"
        f" in {p['seconds']:.1f}s"),
}


def _generic(payload: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in payload.items())


def event_row(envelope: Mapping[str, Any]) -> EventRow:
    """An ``EventRow`` from an event envelope (``Event.to_dict()`` or the SSE JSON)."""
    payload = envelope.get("payload") or {}
    kind = str(envelope["type"])
    try:
        text = FORMATS[kind](payload) if kind in FORMATS else _generic(payload)
    except (KeyError, TypeError, ValueError):
        text = _generic(payload)
    subjects = {str(envelope["node"])}
    for name in NODE_FIELDS:
        if isinstance(payload.get(name), str):
            subjects.add(payload[name])
    for name in payload.get("targets") or ():
        subjects.add(str(name))
    return EventRow(node=str(envelope["node"]), seq=int(envelope["seq"]),
                    ts=float(envelope["ts"]), type=kind,
                    severity=str(envelope.get("severity", "info")), text=text,
                    subjects=frozenset(subjects))
