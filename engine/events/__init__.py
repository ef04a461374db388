"""Typed events, the per-node bus with its JSONL log, and SSE framing."""

from engine.events.bus import EventBus, Subscription
from engine.events.types import (
    PAYLOADS, ArtifactDeleted, BackpressureActivated, BackpressureReleased, CleanupCompleted,
    DataSyncCompleted, DataSyncFailed, DataSyncStarted, DiskPressureChanged, Event, EventType,
    ModelDistributed, ModelPromoted, NodeDown, NodeRecovered, NodeSuspect, Payload,
    PrioritySyncRequested, ReplicaQuarantined, ReplicasVerified, Severity, SyncPaused, SyncResumed,
)

__all__ = [
    "PAYLOADS", "ArtifactDeleted", "BackpressureActivated", "BackpressureReleased",
    "CleanupCompleted", "DataSyncCompleted", "DataSyncFailed", "DataSyncStarted",
    "DiskPressureChanged", "Event", "EventBus", "EventType", "ModelDistributed", "ModelPromoted",
    "NodeDown", "NodeRecovered", "NodeSuspect", "Payload", "PrioritySyncRequested",
    "ReplicaQuarantined", "ReplicasVerified", "Severity", "Subscription", "SyncPaused",
    "SyncResumed",
]
