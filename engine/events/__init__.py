"""Typed events, the per-node bus with its JSONL log, and SSE framing."""

from engine.events.bus import EventBus, Subscription
from engine.events.types import (
    PAYLOADS, BackpressureActivated, BackpressureReleased, DataSyncCompleted, DataSyncFailed,
    DataSyncStarted, Event, EventType, ModelDistributed, ModelPromoted, NodeDown, NodeRecovered,
    NodeSuspect, Payload, PrioritySyncRequested, ReplicaQuarantined, ReplicasVerified, Severity,
    SyncPaused, SyncResumed,
)

__all__ = [
    "PAYLOADS", "BackpressureActivated", "BackpressureReleased", "DataSyncCompleted",
    "DataSyncFailed", "DataSyncStarted", "Event", "EventBus", "EventType", "ModelDistributed",
    "ModelPromoted", "NodeDown", "NodeRecovered", "NodeSuspect", "Payload",
    "PrioritySyncRequested", "ReplicaQuarantined", "ReplicasVerified", "Severity",
    "Subscription", "SyncPaused", "SyncResumed",
]
