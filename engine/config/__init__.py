"""Cluster configuration: distributed_hosts.yaml + RINGRIFT_* environment overrides, validated.

    from engine.config import load_config, ConfigError
    cfg = load_config("config/distributed_hosts.yaml")      # env=os.environ, base_dir=file's dir
    cfg.coordinator.url, cfg.bandwidth_limit_mbps("vast-12345"), cfg.strategy_for("gpu-2")

Every problem is a ConfigError whose str() is one line: ``<file>:<line>: <field>: <problem>``.
"""

from __future__ import annotations

from pathlib import Path

from engine.resources import config_dir

from .env import ENV_VARS
from .errors import ConfigError, UnknownHostError
from .loader import load_config, load_config_text
from .schema import (
    STRATEGIES,
    AutoSync,
    BandwidthLimits,
    ClusterConfig,
    HostConfig,
    Membership,
    PushThresholds,
    SshConfig,
    SyncRouting,
    Transfer,
    parse_size,
)

__all__ = [
    "AutoSync", "BandwidthLimits", "ClusterConfig", "ConfigError", "ENV_VARS", "HostConfig", "Membership",
    "PushThresholds", "STRATEGIES", "SshConfig", "SyncRouting", "Transfer", "UnknownHostError",
    "config_dir", "default_config_path", "load_config", "load_config_text", "parse_size",
]

def default_config_path() -> Path:
    """The shipped demo cluster, ``local.yaml``."""
    return config_dir() / "local.yaml"
