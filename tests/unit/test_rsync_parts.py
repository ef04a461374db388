"""The rsync transport's pure parts: the version floor, the ssh options and known_hosts,
the config's rule that rsync needs a known host key."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import ClusterConfig, load_config_text
from engine.config.errors import ConfigError
from engine.transport.rsync_version import MIN_RSYNC, OldRsync, parse_version, require
from engine.transport.ssh_setup import SshSetup

pytestmark = pytest.mark.unit

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB6d9kq2d5Yx3P3tVb7r0p9yQ0aH3f1oFv8q7m9bq3Xy"


def test_the_version_floor_is_3_4_3_on_either_end() -> None:
    assert MIN_RSYNC == (3, 4, 3)
    assert parse_version("rsync  version 3.5.0  protocol version 32\n…") == (3, 5, 0)
    assert parse_version("rsync  version v3.4.3  protocol version 32") == (3, 4, 3)
    assert parse_version("rsync version 3.4  protocol version 32") == (3, 4, 0)
    assert parse_version("openrsync: protocol version 29") is None
    assert require("rsync  version 3.4.3  protocol version 32", "coord") == (3, 4, 3)
    with pytest.raises(OldRsync, match=r"^rsync 3\.4\.2 on coord is older than 3\.4\.3"):
        require("rsync  version 3.4.2  protocol version 32", "coord")
    with pytest.raises(OldRsync, match="cannot read the rsync version on gpu-1"):
        require("bash: rsync: command not found", "gpu-1")


def _config(tmp_path: Path, port: int = 2222) -> ClusterConfig:
    return ClusterConfig.model_validate({"hosts": {
        "coord": {"role": "coordinator", "provider": "x", "data_root": str(tmp_path / "c"),
                  "port": 9001, "transport": "rsync",
                  "ssh": {"host": "10.0.0.1", "port": port, "user": "rs", "key": "/k",
                          "host_key": KEY + " root@coord"}},
        "gpu-1": {"role": "gpu", "provider": "x", "data_root": str(tmp_path / "g"), "port": 9002,
                  "ssh": {"host": "10.0.0.2", "user": "rs", "host_key": KEY}},
        "cpu-1": {"role": "cpu", "provider": "x", "data_root": str(tmp_path / "p"),
                  "port": 9003}}})


def test_known_hosts_holds_exactly_the_configured_keys(tmp_path: Path) -> None:
    config = _config(tmp_path)
    setup = SshSetup("gpu-1", tmp_path / "state", config.hosts.values())
    setup.write()
    assert setup.known_hosts.read_text() == f"[10.0.0.1]:2222 {KEY}\n10.0.0.2 {KEY}\n"
    assert setup.control_dir.stat().st_mode & 0o777 == 0o700
    argv = setup.options(config.host("coord"))
    for option in ("BatchMode=yes", "IdentitiesOnly=yes", "StrictHostKeyChecking=yes",
                   f"UserKnownHostsFile={setup.known_hosts}", "GlobalKnownHostsFile=/dev/null",
                   "ControlMaster=auto", "ConnectTimeout=5", "ServerAliveInterval=5"):
        assert option in argv, option
    assert argv[argv.index("-i") + 1] == "/k" and argv[argv.index("-p") + 1] == "2222"
    assert len(str(setup.control_dir)) + 41 < 104, "a control socket path must stay short"
    assert setup.destination(config.host("coord")) == "rs@10.0.0.1"
    with pytest.raises(ValueError, match="hosts.cpu-1.ssh is not set"):
        setup.options(config.host("cpu-1"))
    setup.close()
    assert not setup.control_dir.exists()


def test_rsync_to_a_host_without_a_known_key_is_a_config_error(tmp_path: Path) -> None:
    text = f"""hosts:
  coord:
    role: coordinator
    provider: x
    data_root: {tmp_path}/c
    transport: rsync
    ssh: {{host: 10.0.0.1, user: rs}}
"""
    with pytest.raises(ConfigError) as failed:
        load_config_text(text, source="cluster.yaml")
    assert "cluster.yaml:6: hosts.coord.transport: transport rsync needs an ssh block with" \
        " host_key" in str(failed.value)
    with pytest.raises(ConfigError, match="host_key must be a public key line"):
        load_config_text(text.replace("user: rs}", "user: rs, host_key: nonsense}"),
                         source="cluster.yaml")
    with pytest.raises(ConfigError, match="transport auto needs an ssh block with host_key"):
        load_config_text(text.replace("transport: rsync", "transport: auto"),
                         source="cluster.yaml")
