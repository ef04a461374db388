"""ClusterManifest: what exists where, verified how, on SQLite (WAL)."""

from engine.manifest.store import Artifact, ClusterManifest, Replica, SyncReceipt

__all__ = ["Artifact", "ClusterManifest", "Replica", "SyncReceipt"]
