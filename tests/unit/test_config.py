"""engine.config: shipped configs load; every rule fails with the right file, line and field."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from engine.config import (
    ClusterConfig,
    ConfigError,
    HostConfig,
    UnknownHostError,
    config_dir,
    default_config_path,
    load_config,
    load_config_text,
    parse_size,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]

# A small valid cluster. Tests edit it; `<<` marks the line the error must point at (the marker is a
# YAML comment, so it does not change the document).
BASE = """\
cluster_name: test
token: secret
sync_routing:
  priority_hosts:
    - gpu-1
auto_sync:
  interval_seconds: 5
push:
  push_percent: 50
  urgent_percent: 70
  cleanup_percent: 75
hosts:
  coord:
    role: coordinator
    provider: local
    port: 8770
    data_root: nodes/coord
  gpu-1:
    role: gpu
    provider: vast
    port: 8771
    data_root: nodes/gpu-1
    disk_quota: 64MiB
  gpu-2:
    role: gpu
    provider: lambda
    port: 8772
    data_root: nodes/gpu-2
    ephemeral: true
"""


def write(tmp_path: Path, text: str, name: str = "cluster.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def marked_line(text: str) -> int:
    """1-based line of the single line carrying the `# <<` marker."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if line.rstrip().endswith("# <<")]
    assert len(hits) == 1, hits
    return hits[0]


def load_error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    err = info.value
    assert "\n" not in str(err)
    assert "Traceback" not in str(err)
    return err


def assert_points_at(tmp_path: Path, text: str, field: str, *words: str) -> ConfigError:
    err = load_error(tmp_path, text)
    path = str(tmp_path / "cluster.yaml")
    line = marked_line(text)
    assert (err.file, err.line, err.field) == (path, line, field), str(err)
    assert str(err).startswith(f"{path}:{line}: {field}: "), str(err)
    for word in words:
        assert word in str(err), str(err)
    return err


# ------------------------------------------------------------------------------- shipped files
@pytest.mark.parametrize("name", ["distributed_hosts.yaml", "local.yaml"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(REPO / "config" / name, env={})
    assert cfg.source == REPO / "config" / name
    assert len(cfg.hosts) >= 6
    assert cfg.coordinator.role == "coordinator"
    for host in cfg.hosts.values():
        assert host.data_root.is_absolute()


def test_distributed_hosts_example_matches_seed() -> None:
    cfg = load_config(REPO / "config" / "distributed_hosts.yaml", env={})
    assert 30 <= len(cfg.hosts) <= 34
    assert cfg.coordinator.name == "mac-studio"
    assert cfg.sync_routing.priority_hosts == ["nebius-h100-1", "runpod-h100"]
    assert cfg.sync_routing.max_disk_usage_percent == 70.0
    assert cfg.sync_routing.exclude_patterns == ["*.tmp", ".rsync-partial/*"]
    assert cfg.auto_sync.interval_seconds == 60 and cfg.auto_sync.strategy == "push_from_generator"
    limits = cfg.bandwidth_limits.providers
    assert (limits["runpod"], limits["nebius"], limits["vast"], limits["vultr"]) == (100, 100, 50, 50)
    assert cfg.bandwidth_limits.default_mbps == 50
    assert (cfg.push.push_percent, cfg.push.urgent_percent, cfg.push.cleanup_percent) == (50, 70, 75)
    assert cfg.push.min_copies_before_delete == 2
    providers = {host.provider for host in cfg.hosts.values()}
    assert {"lambda", "vast", "runpod", "nebius", "hetzner", "vultr"} <= providers
    assert any(host.ephemeral for host in cfg.hosts.values())
    assert cfg.token == "change-me"


def test_local_demo_cluster() -> None:
    cfg = load_config(REPO / "config" / "local.yaml", env={}, base_dir="/tmp/demo")
    assert list(cfg.hosts) == ["coordinator", "gpu-1", "gpu-2", "gpu-3", "gpu-4", "cpu-1"]
    assert [h.port for h in cfg.hosts.values()] == list(range(8770, 8776))
    assert {h.address for h in cfg.hosts.values()} == {"127.0.0.1"}
    assert cfg.host("gpu-1").data_root == Path("/tmp/demo/nodes/gpu-1")
    assert cfg.coordinator.disk_quota == 2 * 2**30
    assert cfg.host("gpu-1").disk_quota == 4 * 2**20  # filled within a minute by the demo
    assert cfg.host("cpu-1").disk_quota == 512 * 2**20
    assert cfg.push.interval_seconds == 1
    assert cfg.token == "ringsync-demo-token"
    assert cfg.auto_sync.interval_seconds == 2
    assert cfg.transfer.finished_after_seconds == 1.0
    assert cfg.membership.interval_seconds == 1.0
    assert cfg.host("gpu-2").url == "http://127.0.0.1:8772"


def test_default_config_path_is_the_shipped_local_yaml() -> None:
    assert default_config_path() == REPO / "config" / "local.yaml"
    assert config_dir() == REPO / "config"
    assert default_config_path().is_file()


# ----------------------------------------------------------------------------------- defaults
def test_base_config_defaults_and_paths(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE), env={})
    assert isinstance(cfg, ClusterConfig)
    assert cfg.source == tmp_path / "cluster.yaml" and "source" not in cfg.model_dump()
    assert cfg.host("coord").data_root == tmp_path / "nodes" / "coord"  # relative to the file's dir
    assert cfg.sync_routing.replication_target == 2
    assert cfg.transfer.chunk_bytes == 1048576
    assert cfg.membership.down_after_misses == 3
    assert cfg.host("gpu-1").name == "gpu-1"
    assert cfg.host("gpu-1").disk_quota == 64 * 2**20
    assert cfg.host("gpu-2").disk_quota is None
    other = load_config(write(tmp_path, BASE), env={}, base_dir=tmp_path / "elsewhere")
    assert other.host("gpu-1").data_root == tmp_path / "elsewhere" / "nodes" / "gpu-1"


def test_unknown_host_lookup_is_a_readable_key_error(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE), env={})
    with pytest.raises(KeyError) as info:
        cfg.host("gpu-9")
    assert isinstance(info.value, UnknownHostError)
    assert str(info.value).startswith("unknown host 'gpu-9'") and "gpu-1" in str(info.value)


# ---------------------------------------------------------------------------------- structure
def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    text = BASE.replace("  interval_seconds: 5", "  interval_seconds: [5\n  strategy: gossip  # <<")
    err = load_error(tmp_path, text)
    assert err.field == "yaml" and err.line is not None
    assert str(err).startswith(f"{tmp_path / 'cluster.yaml'}:{err.line}: yaml: ")
    bad = "token: x\nhosts:\n  a: b: c  # <<\n"
    err = load_error(tmp_path, bad)
    assert (err.line, err.field) == (marked_line(bad), "yaml")


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, env={})
    assert str(info.value).startswith(f"{missing}: cannot read: ")
    assert info.value.line is None


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    err = load_error(tmp_path, text)
    assert "empty" in str(err)


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    err = load_error(tmp_path, "- a\n- b\n")
    assert err.line == 1 and "mapping" in str(err)


def test_unknown_key_typo_points_at_its_line(tmp_path: Path) -> None:
    text = BASE.replace("  interval_seconds: 5", "  interval_seconds: 5\n  intreval_seconds: 7  # <<")
    err = assert_points_at(tmp_path, text, "auto_sync.intreval_seconds", "unknown key", "interval_seconds")
    text = BASE.replace("    port: 8771", "    port: 8771\n    dsik_quota: 1GB  # <<")
    assert_points_at(tmp_path, text, "hosts.gpu-1.dsik_quota", "unknown key", "disk_quota")
    text = "tokn: x  # <<\n" + BASE
    assert_points_at(tmp_path, text, "tokn", "unknown key")
    assert err.env_var is None


def test_source_is_not_a_yaml_key(tmp_path: Path) -> None:
    text = BASE + "source: /etc/passwd  # <<\n"
    assert_points_at(tmp_path, text, "source", "unknown key")


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    text = BASE.replace("    port: 8771", "    port: 8771\n    port: 8779  # <<")
    assert_points_at(tmp_path, text, "hosts.gpu-1.port", "duplicate key")


def test_first_error_in_file_order_wins(tmp_path: Path) -> None:
    text = BASE.replace("  push_percent: 50", "  push_percent: -1  # <<").replace("    port: 8772", "    port: 0")
    assert_points_at(tmp_path, text, "push.push_percent", "greater than 0", "-1")


# --------------------------------------------------------------------------- field validation
@pytest.mark.parametrize(
    ("old", "new", "field", "words"),
    [
        ("    port: 8771", "    port: 70000  # <<", "hosts.gpu-1.port", ("65535", "70000")),
        ("    role: gpu\n    provider: vast", "    role: trainer  # <<\n    provider: vast", "hosts.gpu-1.role",
         ("coordinator", "trainer")),
        ("    disk_quota: 64MiB", "    disk_quota: 12XB  # <<", "hosts.gpu-1.disk_quota", ("12XB",)),
        ("  interval_seconds: 5", "  interval_seconds: 0  # <<", "auto_sync.interval_seconds", ("greater than 0",)),
        ("  interval_seconds: 5", "  strategy: teleport  # <<", "auto_sync.strategy", ("gossip",)),
        ("  urgent_percent: 70", "  urgent_percent: 170  # <<", "push.urgent_percent", ("100",)),
        ("    data_root: nodes/gpu-2", "    data_root: ~/ringsync  # <<", "hosts.gpu-2.data_root", ("'~'",)),
        ("auto_sync:", "membership: 5  # <<\nauto_sync:", "membership", ("mapping",)),
    ],
)
def test_field_errors_point_at_their_line(tmp_path: Path, old: str, new: str, field: str, words: tuple) -> None:
    assert old in BASE
    assert_points_at(tmp_path, BASE.replace(old, new, 1), field, *words)


def test_missing_required_host_key(tmp_path: Path) -> None:
    text = BASE.replace("  gpu-2:", "  gpu-2:  # <<").replace("    provider: lambda\n", "")
    assert_points_at(tmp_path, text, "hosts.gpu-2.provider", "required")


def test_threshold_order(tmp_path: Path) -> None:
    text = BASE.replace("  urgent_percent: 70", "  urgent_percent: 80  # <<")
    assert_points_at(tmp_path, text, "push.urgent_percent", "cleanup_percent (75)")
    text = BASE.replace("  push_percent: 50", "  push_percent: 72  # <<")
    assert_points_at(tmp_path, text, "push.push_percent", "below urgent_percent (70)")


def test_membership_down_after_suspect(tmp_path: Path) -> None:
    text = BASE + "membership:\n  suspect_after_misses: 3\n  down_after_misses: 2  # <<\n"
    assert_points_at(tmp_path, text, "membership.down_after_misses", "suspect_after_misses")


def test_provider_limit_must_be_positive(tmp_path: Path) -> None:
    text = BASE + "bandwidth_limits:\n  providers:\n    runpod: 100\n    vast: 0  # <<\n"
    assert_points_at(tmp_path, text, "bandwidth_limits.providers.vast", "greater than 0")


# ------------------------------------------------------------------------------- cross-field
def test_no_coordinator(tmp_path: Path) -> None:
    text = BASE.replace("\nhosts:", "\nhosts:  # <<").replace("role: coordinator", "role: cpu")
    assert_points_at(tmp_path, text, "hosts", "coordinator")


def test_two_coordinators_points_at_second(tmp_path: Path) -> None:
    text = BASE.replace("    role: gpu\n    provider: lambda", "    role: coordinator  # <<\n    provider: lambda")
    assert_points_at(tmp_path, text, "hosts.gpu-2.role", "'coord'")


def test_priority_host_must_exist(tmp_path: Path) -> None:
    text = BASE.replace("    - gpu-1\n", "    - gpu-1\n    - gpu-7  # <<\n")
    assert_points_at(tmp_path, text, "sync_routing.priority_hosts[1]", "'gpu-7'")


def test_duplicate_address_and_port(tmp_path: Path) -> None:
    text = BASE.replace("    port: 8772", "    port: 8771  # <<")
    assert_points_at(tmp_path, text, "hosts.gpu-2.port", "already used by host 'gpu-1'")
    # "localhost" is the same machine as the default 127.0.0.1
    text = BASE.replace("    port: 8772", "    address: localhost\n    port: 8770  # <<")
    assert_points_at(tmp_path, text, "hosts.gpu-2.port", "'coord'")
    # the same port on different machines is fine
    ok = BASE.replace("    port: 8772", "    address: 10.0.0.2\n    port: 8770")
    assert load_config(write(tmp_path, ok), env={}).host("gpu-2").url == "http://10.0.0.2:8770"


def test_duplicate_data_root_on_same_address(tmp_path: Path) -> None:
    text = BASE.replace("    data_root: nodes/gpu-2", "    data_root: ./nodes/gpu-1/  # <<")
    assert_points_at(tmp_path, text, "hosts.gpu-2.data_root", "'gpu-1'")
    text = BASE.replace("    data_root: nodes/gpu-2", "    data_root: nodes/gpu-1/sub  # <<")
    assert_points_at(tmp_path, text, "hosts.gpu-2.data_root", "overlaps")
    ok = BASE.replace("    port: 8772\n    data_root: nodes/gpu-2", "    address: 10.0.0.2\n    data_root: nodes/gpu-1")
    load_config(write(tmp_path, ok), env={})


@pytest.mark.parametrize("name", ["-gpu", "gpu 1", "gpu/1", "ünï"])
def test_bad_host_name(tmp_path: Path, name: str) -> None:
    text = BASE.replace("  gpu-2:", f"  '{name}':  # <<")
    assert_points_at(tmp_path, text, f"hosts.{name}", "invalid host name")


def test_at_least_one_host(tmp_path: Path) -> None:
    assert_points_at(tmp_path, "token: x\nhosts: {}  # <<\n", "hosts", "at least one")
    assert_points_at(tmp_path, "token: x\nhosts:  # <<\n", "hosts", "at least one")
    err = load_error(tmp_path, "token: x\ncluster_name: c\n")
    assert err.field == "hosts" and "at least one" in str(err)


def test_merge_keys_and_anchors(tmp_path: Path) -> None:
    text = BASE.replace("  gpu-2:\n", "  gpu-2: &gpu\n") + (
        "  gpu-3:\n    <<: *gpu\n    port: 8773\n    data_root: nodes/gpu-3\n"
        "  gpu-4:\n    <<: *gpu\n    port: 8774\n    data_root: nodes/gpu-1  # <<\n"
    )
    err = load_error(tmp_path, text)
    assert (err.line, err.field) == (marked_line(text), "hosts.gpu-4.data_root")
    cfg = load_config(write(tmp_path, text.replace("nodes/gpu-1  # <<", "nodes/gpu-4")), env={})
    assert cfg.host("gpu-3").provider == "lambda" and cfg.host("gpu-3").ephemeral


# ------------------------------------------------------------------------------------- token
def test_missing_token(tmp_path: Path) -> None:
    err = load_error(tmp_path, BASE.replace("token: secret\n", ""))
    assert err.field == "token" and err.line is None
    assert "token: no cluster token: set `token:` in the config or RINGRIFT_CLUSTER_TOKEN" in str(err)
    text = BASE.replace("token: secret", "token: ''  # <<")
    assert_points_at(tmp_path, text, "token", "no cluster token")


def test_token_from_env_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("token: secret\n", ""))
    assert load_config(path, env={"RINGRIFT_CLUSTER_TOKEN": "s3cret\n"}).token == "s3cret"
    path = write(tmp_path, BASE)
    assert load_config(path, env={"RINGRIFT_CLUSTER_TOKEN": "from-env"}).token == "from-env"
    assert load_config(path, env={"RINGRIFT_CLUSTER_TOKEN": ""}).token == "secret"  # empty = unset


# --------------------------------------------------------------------------------------- env
def test_env_overrides_apply(tmp_path: Path) -> None:
    env = {
        "RINGRIFT_AUTO_SYNC_ENABLED": "No",
        "RINGRIFT_SYNC_INTERVAL": "2.5",
        "RINGRIFT_SYNC_PUSH_THRESHOLD": "40",
        "RINGRIFT_MIN_COPIES_BEFORE_DELETE": "3",
    }
    cfg = load_config(write(tmp_path, BASE), env=env)
    assert cfg.auto_sync.enabled is False
    assert cfg.auto_sync.interval_seconds == 2.5
    assert cfg.push.push_percent == 40
    assert cfg.push.min_copies_before_delete == 3
    for raw, expected in [("TRUE", True), ("1", True), ("yes", True), ("0", False), ("false", False)]:
        cfg = load_config(write(tmp_path, BASE), env={"RINGRIFT_AUTO_SYNC_ENABLED": raw})
        assert cfg.auto_sync.enabled is expected


def test_env_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGRIFT_SYNC_INTERVAL", "7")
    assert load_config(write(tmp_path, BASE)).auto_sync.interval_seconds == 7


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("RINGRIFT_SYNC_INTERVAL", "abc", "RINGRIFT_SYNC_INTERVAL: expected a number of seconds > 0, got 'abc'"),
        ("RINGRIFT_SYNC_INTERVAL", "-3", "RINGRIFT_SYNC_INTERVAL: expected a number of seconds > 0, got '-3'"),
        ("RINGRIFT_AUTO_SYNC_ENABLED", "maybe", "RINGRIFT_AUTO_SYNC_ENABLED: expected true or false"),
        ("RINGRIFT_SYNC_PUSH_THRESHOLD", "150", "RINGRIFT_SYNC_PUSH_THRESHOLD: expected a disk usage percentage"),
        ("RINGRIFT_MIN_COPIES_BEFORE_DELETE", "0", "RINGRIFT_MIN_COPIES_BEFORE_DELETE: expected a whole number"),
        ("RINGRIFT_MIN_COPIES_BEFORE_DELETE", "2.5", "RINGRIFT_MIN_COPIES_BEFORE_DELETE: expected a whole number"),
    ],
)
def test_bad_env_values_name_the_variable(tmp_path: Path, var: str, value: str, expected: str) -> None:
    err = load_error(tmp_path, BASE, env={var: value})
    assert str(err).startswith(expected), str(err)
    assert err.env_var == var and err.line is None


def test_env_value_breaking_cross_field_rule_names_the_variable(tmp_path: Path) -> None:
    err = load_error(tmp_path, BASE, env={"RINGRIFT_SYNC_PUSH_THRESHOLD": "80"})
    assert str(err).startswith("RINGRIFT_SYNC_PUSH_THRESHOLD: push_percent (80) must be below urgent_percent (70)")
    assert err.field == "push.push_percent"


# ---------------------------------------------------------------------------------- queries
def test_bandwidth_limit_precedence(tmp_path: Path) -> None:
    text = BASE + (
        "bandwidth_limits:\n  default_mbps: 30\n  providers:\n    Lambda: 200\n    vast: 50\n"
    ).replace("    port: 8770", "    port: 8770")
    text = text.replace("    port: 8771", "    port: 8771\n    bandwidth_mbps: 12.5")
    cfg = load_config(write(tmp_path, text), env={})
    assert cfg.bandwidth_limit_mbps("gpu-1") == 12.5  # host override beats provider (vast: 50)
    assert cfg.bandwidth_limit_mbps("gpu-2") == 200  # provider (names are case-insensitive)
    assert cfg.bandwidth_limit_mbps("coord") == 30  # provider "local" not listed: default
    defaults = load_config(write(tmp_path, BASE), env={})
    assert defaults.bandwidth_limits.providers == {"runpod": 100, "nebius": 100, "vast": 50, "vultr": 50}
    assert defaults.bandwidth_limit_mbps("gpu-1") == 50 and defaults.bandwidth_limit_mbps("coord") == 50
    with pytest.raises(KeyError):
        defaults.bandwidth_limit_mbps("nope")


def test_strategy_for(tmp_path: Path) -> None:
    text = BASE.replace("  interval_seconds: 5", "  interval_seconds: 5\n  strategy: gossip")
    text += "  gpu-3:\n    role: gpu\n    provider: vast\n    port: 8773\n    data_root: n3\n"
    text += "    ephemeral: true\n    strategy: broadcast\n"
    cfg = load_config(write(tmp_path, text), env={})
    assert cfg.strategy_for("gpu-1") == "gossip"  # cluster default
    assert cfg.strategy_for("gpu-2") == "ephemeral"  # ephemeral host
    assert cfg.strategy_for("gpu-3") == "broadcast"  # explicit beats ephemeral
    assert load_config(write(tmp_path, BASE), env={}).strategy_for("coord") == "push_from_generator"


def test_url_brackets_ipv6() -> None:
    host = HostConfig(name="h", role="gpu", provider="x", address="fd00::1", port=9000, data_root="/d")
    assert host.url == "http://[fd00::1]:9000"


def test_load_config_text(tmp_path: Path) -> None:
    cfg = load_config_text(BASE, source="inline.yaml", env={}, base_dir=tmp_path)
    assert cfg.host("gpu-1").data_root == tmp_path / "nodes" / "gpu-1"
    with pytest.raises(ConfigError) as info:
        load_config_text(BASE.replace("port: 8771", "port: x"), source="inline.yaml", env={})
    assert str(info.value).startswith("inline.yaml:21: hosts.gpu-1.port: ")


# ----------------------------------------------------------------------------------- sizes
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (123, 123), (0, 0), ("123", 123), ("123B", 123), (2048.0, 2048),
        ("500MB", 500_000_000), ("500 mb", 500_000_000), ("1.5GB", 1_500_000_000),
        ("2GiB", 2 * 2**30), ("64MiB", 64 * 2**20), ("1KiB", 1024), ("1kb", 1000), ("4TB", 4 * 10**12),
        ("0.5KiB", 512),
    ],
)
def test_parse_size(value: object, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", ["", "abc", "12XB", "-5MB", -1, "1.5", "0.3KB x", True, None, 1.5, "MB"])
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_size(value)


# ----------------------------------------------------------------------------------- errors
def test_config_error_is_one_line_and_picklable() -> None:
    err = ConfigError("bad\nthing\n  here", file="a.yaml", line=3, field="x.y")
    assert str(err) == "a.yaml:3: x.y: bad thing here"
    copy = pickle.loads(pickle.dumps(err))
    assert (str(copy), copy.file, copy.line, copy.field) == (str(err), "a.yaml", 3, "x.y")
    assert str(ConfigError("p", env_var="RINGRIFT_SYNC_INTERVAL", file="a.yaml")) == "RINGRIFT_SYNC_INTERVAL: p"


# ------------------------------------------------------------------ routing policies and hooks
POLICY = BASE.replace("    - gpu-1\n", "    - gpu-1\n  policies:\n    models:\n      broadcast: true\n")


def test_policies_hooks_and_breakers_load(tmp_path: Path) -> None:
    text = POLICY.replace("      broadcast: true\n", "      broadcast: true\n      hosts: [coord]\n"
                          "      replication_target: all\n") + (
        "hooks:\n  - event: DATA_SYNC_COMPLETED\n    data_types: [games, npz]\n"
        "    command: [python3, export.py, '{path}', '{config_key}']\n")
    cfg = load_config(write(tmp_path, text), env={})
    models = cfg.sync_routing.policy("models")
    assert models.broadcast and models.hosts == ["coord"] and models.replication_target == "all"
    assert cfg.sync_routing.policy("games").roles == ["gpu", "cpu"]  # the default policy
    assert cfg.hooks[0].command[2] == "{path}" and cfg.hooks[0].timeout_seconds == 300
    assert (cfg.transfer.breaker_failures, cfg.sync_routing.capacity_refresh_seconds) == (5, 10)


def test_a_policy_names_only_configured_hosts(tmp_path: Path) -> None:
    text = POLICY.replace("      broadcast: true\n", "      broadcast: true\n      exclude_hosts:\n"
                          "        - gpu-9  # <<\n")
    assert_points_at(tmp_path, text, "sync_routing.policies.models.exclude_hosts[0]", "'gpu-9'")


def test_a_policy_is_for_a_known_data_type(tmp_path: Path) -> None:
    text = POLICY.replace("    models:\n", "    modles:  # <<\n")
    assert_points_at(tmp_path, text, "sync_routing.policies.modles", "'modles'", "models")


def test_replication_target_is_a_count_or_all(tmp_path: Path) -> None:
    text = POLICY.replace("      broadcast: true\n", "      broadcast: true\n"
                          "      replication_target: 0  # <<\n")
    assert_points_at(tmp_path, text, "sync_routing.policies.models.replication_target", "all")


def test_capacity_refresh_is_at_most_30_seconds(tmp_path: Path) -> None:
    text = BASE.replace("    - gpu-1\n", "    - gpu-1\n  capacity_refresh_seconds: 60  # <<\n")
    assert_points_at(tmp_path, text, "sync_routing.capacity_refresh_seconds", "30")


def test_a_hook_names_a_real_event_type(tmp_path: Path) -> None:
    text = BASE + "hooks:\n  - event: DATA_SYNCED  # <<\n    command: [true]\n"
    assert_points_at(tmp_path, text, "hooks[0].event", "'DATA_SYNCED'", "DATA_SYNC_COMPLETED")
