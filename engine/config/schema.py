"""The validated shape of distributed_hosts.yaml (pydantic v2 models) and ``parse_size``.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored setting.
Cross-field rules raise :class:`FieldProblem` so the loader can point at the offending YAML line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from engine.events.types import EventType
from engine.paths import DATA_TYPES

from .errors import FieldProblem, UnknownHostError
from .units import parse_size

__all__ = [
    "AutoSync", "BandwidthLimits", "ClusterConfig", "DataTypePolicy", "Hook", "HostConfig",
    "Membership", "PushThresholds", "Role", "STRATEGIES", "SshConfig", "Strategy", "SyncRouting",
    "Transfer", "parse_size",
]

Strategy = Literal["push_from_generator", "gossip", "broadcast", "ephemeral"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
Role = Literal["coordinator", "gpu", "cpu"]
TransportName = Literal["http", "rsync", "auto"]
"""How other nodes push to a host: its HTTP API, or rsync over its SSH endpoint."""

HOST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

def _size_or_none(value: object) -> object:
    return None if value is None else parse_size(value)  # type: ignore[arg-type]


SizeBytes = Annotated[int, BeforeValidator(_size_or_none), Field(ge=0)]
Percent = Annotated[float, Field(gt=0, le=100)]
Seconds = Annotated[float, Field(gt=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# ------------------------------------------------------------------------------------- sections
class DataTypePolicy(_Model):
    """Which nodes may hold copies of one data type, and how many gossip keeps."""

    roles: list[Role] = Field(default_factory=lambda: ["gpu", "cpu"])
    """Roles whose nodes may receive this type by gossip or broadcast. The coordinator is a
    gossip/broadcast target only when listed here (or under ``hosts``)."""
    hosts: list[str] = Field(default_factory=list)
    """Further hosts allowed by name, whatever their role."""
    exclude_hosts: list[str] = Field(default_factory=list)
    """Hosts that never receive this type by any strategy."""
    replication_target: int | Literal["all"] | None = None
    """Copies gossip keeps besides the origin (default: sync_routing.replication_target);
    ``all``: every eligible node."""
    broadcast: bool = False
    """Nodes with the broadcast strategy push this type to every eligible node."""
    ephemeral_copies_count: bool = False
    """Copies on ephemeral (spot) hosts count towards ``min_copies_before_delete`` (by
    default they do not: a spot host vanishes with its disk)."""
    distinct_providers: bool = False
    """A deletion needs its vouching copies on distinct providers (one cloud's outage
    cannot take every copy)."""

    @field_validator("replication_target", mode="after")
    @classmethod
    def _positive(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 1:
            raise ValueError("replication_target must be at least 1 (or 'all')")
        return value


def _default_policies() -> dict[str, DataTypePolicy]:
    return {"models": DataTypePolicy(broadcast=True)}


class SyncRouting(_Model):
    max_disk_usage_percent: Percent = 70.0
    """No data is routed to a node above this usage; a node above it announces backpressure."""
    priority_hosts: list[str] = Field(default_factory=list)
    exclude_patterns: list[str] = Field(default_factory=lambda: ["*.tmp", ".rsync-partial/*"])
    replication_target: int = Field(default=2, ge=1)
    policies: dict[str, DataTypePolicy] = Field(default_factory=_default_policies)
    """Per data type (games, npz, models): who may hold it; replaces the default table."""
    capacity_refresh_seconds: Annotated[float, Field(gt=0, le=30)] = 10.0
    """How often a node refreshes what it knows of the others (up/down, free space,
    backpressure) from the coordinator; at most 30 s."""
    max_inbound_queue: int = Field(default=32, ge=1)
    """Uploads a node accepts at once before it announces backpressure (queue)."""

    def policy(self, data_type: str) -> DataTypePolicy:
        """The policy of ``data_type`` (the defaults when none is configured)."""
        return self.policies.get(data_type) or DataTypePolicy()


class AutoSync(_Model):
    enabled: bool = True
    interval_seconds: Seconds = 60.0
    strategy: Strategy = "push_from_generator"
    gossip_fanout: int = Field(default=3, ge=1, le=64)
    """Peers a gossip node exchanges manifest deltas with each interval."""
    ephemeral_interval_seconds: Seconds = 5.0
    """Cycle interval of the ephemeral strategy (never longer than interval_seconds)."""
    final_push_seconds: Annotated[float, Field(ge=0)] = 20.0
    """On SIGTERM an ephemeral node spends at most this long pushing what is not yet safe."""


def _default_providers() -> dict[str, float]:
    return {"runpod": 100.0, "nebius": 100.0, "vast": 50.0, "vultr": 50.0}


class BandwidthLimits(_Model):
    """Limits in MB/s (megabytes per second, as in the seed). ``providers`` replaces the default
    table when given, it is not merged with it."""

    default_mbps: Annotated[float, Field(gt=0)] = 50.0
    providers: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=_default_providers)

    @field_validator("providers", mode="after")
    @classmethod
    def _lower_provider_names(cls, value: dict[str, float]) -> dict[str, float]:
        return {name.lower(): mbps for name, mbps in value.items()}


class PushThresholds(_Model):
    """Disk-usage percentages at which a GPU node pushes, pushes urgently, and cleans up."""

    push_percent: Percent = 50.0
    urgent_percent: Percent = 70.0
    cleanup_percent: Percent = 75.0
    min_copies_before_delete: int = Field(default=2, ge=1)
    """Verified copies on other nodes, each vouched for live, before a source may be deleted."""
    interval_seconds: Seconds = 10.0
    """How often SyncPushDaemon measures usage against capacity and acts on it."""
    batch_files: int = Field(default=16, ge=1)
    """Artifacts brought towards min_copies per cycle at the push level (oldest first)."""
    urgent_batch_files: int = Field(default=64, ge=1)
    """The same at the urgent level and above; urgent pushes also go ahead of normal ones."""
    hash_concurrency: int = Field(default=2, ge=1, le=64)
    """Files a node hashes at once (vouches, scrub, verification): vouches are answered from
    the bytes read now, never from a cached hash, so this bounds what they cost the node."""
    live_snapshot_seconds: Annotated[float, Field(ge=0)] = 0.0
    """Push a consistent snapshot of each database still being written at most this often,
    so a vanished node loses at most this much; it never counts as a copy. 0: off."""

    @model_validator(mode="before")
    @classmethod
    def _removed_options(cls, data: Any) -> Any:
        if isinstance(data, dict) and "vouch_max_age_seconds" in data:
            raise FieldProblem([("vouch_max_age_seconds",)],
                               "vouch_max_age_seconds was removed: a holder always re-reads and"
                               " hashes its copy when asked to vouch for a deletion")
        return data

    @model_validator(mode="after")
    def _ordered(self) -> PushThresholds:
        if not self.push_percent < self.urgent_percent:
            raise FieldProblem(
                [("push_percent",), ("urgent_percent",)],
                f"push_percent ({self.push_percent:g}) must be below urgent_percent ({self.urgent_percent:g})",
            )
        if not self.urgent_percent < self.cleanup_percent:
            raise FieldProblem(
                [("urgent_percent",), ("cleanup_percent",)],
                f"urgent_percent ({self.urgent_percent:g}) must be below cleanup_percent "
                f"({self.cleanup_percent:g})",
            )
        return self


class Scrub(_Model):
    """Background re-verification of every copy a node stores (like a ZFS or Ceph deep scrub)."""

    enabled: bool = True
    pass_hours: Annotated[float, Field(gt=0)] = 24.0
    """One full pass over the stored copies in about this long: the rate is the bytes held
    divided by this (at least ``min_bytes_per_second``)."""
    bytes_per_second: SizeBytes | None = None
    """A fixed rate instead (bytes/s; ``8MiB`` works)."""
    min_bytes_per_second: SizeBytes = 256 * 2**10
    """The slowest rate a pass runs at, so a small store is not scrubbed once a day only."""


class Membership(_Model):
    interval_seconds: Seconds = 1.0
    """How often the coordinator asks every node for ``/status``; the dashboard's view of the
    cluster is at most this (plus its 0.5 s refresh) old."""
    suspect_after_misses: int = Field(default=1, ge=1)
    down_after_misses: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _down_after_suspect(self) -> Membership:
        if self.down_after_misses <= self.suspect_after_misses:
            raise FieldProblem(
                [("down_after_misses",), ("suspect_after_misses",)],
                f"down_after_misses ({self.down_after_misses}) must be greater than suspect_after_misses "
                f"({self.suspect_after_misses})",
            )
        return self


class Transfer(_Model):
    chunk_bytes: Annotated[SizeBytes, Field(gt=0, le=256 * 2**20)] = 1048576
    max_concurrent: int = Field(default=4, ge=1, le=64)
    retry_base_seconds: Seconds = 1.0
    retry_max_seconds: Seconds = 60.0
    finished_after_seconds: Annotated[float, Field(ge=0)] = 10.0
    """How long a file must go unmodified before it counts as finished (and may be pushed)."""
    integrity_check_max_bytes: SizeBytes = 64 * 2**20
    """A received database up to this size gets ``PRAGMA integrity_check``; larger ones
    ``PRAGMA quick_check``. Either must pass before the copy counts."""
    breaker_failures: int = Field(default=5, ge=1)
    """Consecutive failed transfers to one node that open its circuit breaker."""
    breaker_reset_seconds: Seconds = 30.0
    """How long an open breaker waits before letting one probe through (doubling, up to
    8x, while probes keep failing)."""

    @model_validator(mode="after")
    def _retry_range(self) -> Transfer:
        if self.retry_max_seconds < self.retry_base_seconds:
            raise FieldProblem(
                [("retry_max_seconds",), ("retry_base_seconds",)],
                f"retry_max_seconds ({self.retry_max_seconds:g}) must be at least retry_base_seconds "
                f"({self.retry_base_seconds:g})",
            )
        return self


class Hook(_Model):
    """A command run when an event of type ``event`` is emitted on this node."""

    event: str
    """An event type, e.g. DATA_SYNC_COMPLETED."""
    command: list[str] = Field(min_length=1)
    """argv; ``{path}``, ``{data_type}``, ``{config_key}``, ``{node}`` and ``{event}`` are
    filled in (artifact events run once per artifact stored on this node)."""
    data_types: list[str] = Field(default_factory=list)
    """Run only for artifacts of these types (empty: every type; other events: always)."""
    timeout_seconds: Seconds = 300.0
    """A hook still running after this is killed (a HOOK_FAILED event)."""

    @field_validator("event", mode="after")
    @classmethod
    def _known_event(cls, value: str) -> str:
        names = [e.value for e in EventType]
        if value not in names:
            raise ValueError(f"unknown event type {value!r} (expected one of {', '.join(names)})")
        return value


# ----------------------------------------------------------------------------------------- hosts
class SshConfig(_Model):
    host: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    user: str = Field(min_length=1)
    key: str | None = None
    host_key: str | None = None
    """The host's public SSH key (``ssh-ed25519 AAAA…``, as in its
    ``/etc/ssh/ssh_host_ed25519_key.pub``). ringsync writes the known_hosts file it checks
    against from these (``StrictHostKeyChecking=yes``): a host without one is never
    reached over SSH."""

    @field_validator("host_key", mode="after")
    @classmethod
    def _key_line(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = value.split()
        if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
            raise ValueError("host_key must be a public key line: '<type> <base64> [comment]'"
                             " (e.g. the host's /etc/ssh/ssh_host_ed25519_key.pub)")
        return f"{parts[0]} {parts[1]}"


class HostConfig(_Model):
    name: str
    role: Role
    provider: str = Field(min_length=1)
    address: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8770, ge=1, le=65535)
    ssh: SshConfig | None = None
    data_root: Path
    disk_quota: SizeBytes | None = None
    bandwidth_mbps: Annotated[float, Field(gt=0)] | None = None
    ephemeral: bool = False
    strategy: Strategy | None = None
    transport: TransportName = "http"
    """How others push to this host: ``http`` (its API), ``rsync`` (rsync over its ``ssh``
    endpoint, published through its API after the receiver verified the bytes) or ``auto``
    (HTTP; rsync over SSH, its API reached through an SSH tunnel, while the host's HTTP
    port cannot be reached but SSH can)."""

    @field_validator("provider", mode="after")
    @classmethod
    def _lower_provider(cls, value: str) -> str:
        return value.lower()

    @field_validator("data_root", mode="after")
    @classmethod
    def _absolute_data_root(cls, value: Path, info: ValidationInfo) -> Path:
        text = str(value)
        if not text or text == ".":
            raise ValueError("data_root must not be empty")
        if text.startswith("~"):
            raise ValueError(
                f"data_root {text!r}: '~' is not expanded (it means a different home on each host); "
                "use an absolute path"
            )
        if not value.is_absolute():
            context = info.context if isinstance(info.context, dict) else {}
            base = context.get("base_dir") or Path.cwd()
            value = Path(base) / value
        return Path(os.path.normpath(value))

    @model_validator(mode="after")
    def _rsync_needs_ssh(self) -> HostConfig:
        if self.transport != "http" and (self.ssh is None or self.ssh.host_key is None):
            raise FieldProblem([("transport",), ("ssh",)],
                               f"transport {self.transport} needs an ssh block with host_key"
                               " (ringsync never reaches a host whose key it does not know)")
        return self

    @property
    def url(self) -> str:
        """Base URL of the node's P2P HTTP API."""
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{address}:{self.port}"

    @property
    def is_coordinator(self) -> bool:
        return self.role == "coordinator"


def _same_machine_key(address: str) -> str:
    return "127.0.0.1" if address.lower() in {"localhost", "127.0.0.1", "::1"} else address.lower()


# --------------------------------------------------------------------------------------- cluster
class ClusterConfig(_Model):
    cluster_name: str = Field(default="ringsync", min_length=1)
    token: str | None = None
    sync_routing: SyncRouting = Field(default_factory=SyncRouting)
    auto_sync: AutoSync = Field(default_factory=AutoSync)
    bandwidth_limits: BandwidthLimits = Field(default_factory=BandwidthLimits)
    push: PushThresholds = Field(default_factory=PushThresholds)
    membership: Membership = Field(default_factory=Membership)
    scrub: Scrub = Field(default_factory=Scrub)
    transfer: Transfer = Field(default_factory=Transfer)
    hooks: list[Hook] = Field(default_factory=list)
    """Commands attached to event types (e.g. NPZ export on DATA_SYNC_COMPLETED)."""
    hosts: dict[str, HostConfig] = Field(default_factory=dict)
    source: Path | None = Field(default=None, exclude=True, repr=False)
    """The config file this was loaded from (set by the loader; not a YAML key)."""

    @model_validator(mode="before")
    @classmethod
    def _name_hosts(cls, data: object) -> object:
        """Fill each host's ``name`` from its key in the ``hosts:`` mapping."""
        if isinstance(data, dict) and isinstance(data.get("hosts"), dict):
            hosts = {}
            for key, host in data["hosts"].items():
                if isinstance(host, dict) and "name" not in host:
                    host = {"name": key, **host}
                hosts[key] = host
            data = {**data, "hosts": hosts}
        return data

    @model_validator(mode="after")
    def _cross_checks(self) -> ClusterConfig:
        if not self.hosts:
            raise FieldProblem([("hosts",)], "no hosts configured: add at least one under `hosts:`")
        for key, host in self.hosts.items():
            if not HOST_NAME_RE.match(key):
                raise FieldProblem(
                    [("hosts", key)],
                    f"invalid host name {key!r}: use letters, digits, '.', '_' and '-', "
                    "starting with a letter or digit",
                )
            if host.name != key:
                raise FieldProblem([("hosts", key, "name")], f"name {host.name!r} differs from its key {key!r}")
        coordinators = [name for name, host in self.hosts.items() if host.role == "coordinator"]
        if not coordinators:
            raise FieldProblem([("hosts",)], "no host has role coordinator: exactly one must")
        if len(coordinators) > 1:
            raise FieldProblem(
                [("hosts", coordinators[1], "role")],
                f"second coordinator: {coordinators[0]!r} already has role coordinator; exactly one host may",
            )
        for index, name in enumerate(self.sync_routing.priority_hosts):
            if name not in self.hosts:
                raise FieldProblem(
                    [("sync_routing", "priority_hosts", index)], f"unknown host {name!r} (not under `hosts:`)"
                )
        for data_type, policy in self.sync_routing.policies.items():
            if data_type not in DATA_TYPES:
                raise FieldProblem([("sync_routing", "policies", data_type)],
                                   f"unknown data type {data_type!r} (expected one of"
                                   f" {', '.join(DATA_TYPES)})")
            for key in ("hosts", "exclude_hosts"):
                for index, name in enumerate(getattr(policy, key)):
                    if name not in self.hosts:
                        raise FieldProblem([("sync_routing", "policies", data_type, key, index)],
                                           f"unknown host {name!r} (not under `hosts:`)")
        endpoints: dict[tuple[str, int], str] = {}
        roots: dict[str, list[tuple[Path, str]]] = {}
        for name, host in self.hosts.items():
            machine = _same_machine_key(host.address)
            previous = endpoints.setdefault((machine, host.port), name)
            if previous != name:
                raise FieldProblem(
                    [("hosts", name, "port"), ("hosts", name, "address"), ("hosts", name)],
                    f"{host.address}:{host.port} is already used by host {previous!r}",
                )
            for other_root, other in roots.setdefault(machine, []):
                if host.data_root == other_root:
                    problem = f"same data_root as host {other!r} on {host.address}"
                elif host.data_root.is_relative_to(other_root) or other_root.is_relative_to(host.data_root):
                    problem = f"data_root {host.data_root} overlaps host {other!r}'s {other_root} on {host.address}"
                else:
                    continue
                raise FieldProblem([("hosts", name, "data_root"), ("hosts", name)], problem)
            roots[machine].append((host.data_root, name))
        return self

    # ------------------------------------------------------------------------------- queries
    @property
    def coordinator(self) -> HostConfig:
        """The one host with role coordinator."""
        for host in self.hosts.values():
            if host.role == "coordinator":
                return host
        raise UnknownHostError("<coordinator>", list(self.hosts))

    def host(self, name: str) -> HostConfig:
        """The host called ``name``; raises UnknownHostError (a KeyError) with a readable message."""
        try:
            return self.hosts[name]
        except KeyError:
            raise UnknownHostError(name, list(self.hosts)) from None

    def hosts_by_role(self, role: Role) -> list[HostConfig]:
        return [host for host in self.hosts.values() if host.role == role]

    def bandwidth_limit_mbps(self, name: str) -> float:
        """MB/s for ``name``: its own bandwidth_mbps, else its provider's limit, else default_mbps."""
        host = self.host(name)
        if host.bandwidth_mbps is not None:
            return host.bandwidth_mbps
        return self.bandwidth_limits.providers.get(host.provider, self.bandwidth_limits.default_mbps)

    def strategy_for(self, name: str) -> str:
        """The host's strategy, else ``ephemeral`` for ephemeral hosts, else auto_sync.strategy."""
        host = self.host(name)
        if host.strategy is not None:
            return host.strategy
        return "ephemeral" if host.ephemeral else self.auto_sync.strategy
