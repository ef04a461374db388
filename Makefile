# ringsync developer tasks. Needs only python3 (with venv + pip), make and,
# for the tests, the system binaries that .ci/system-deps checks for.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stamp

PYTEST_ARGS ?=

.PHONY: venv test test-hosts chaos demo bench bench-tui bench-cleanup bench-scrub bench-gossip bench-connections bench-hosts bench-hosts-scale bench-rsync system-deps clean

venv: $(STAMP)

# Re-install only when pyproject.toml changed since the last install
# (the stamp lives inside .venv, so deleting .venv also forces a rebuild).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV) || { \
		echo "cannot create $(VENV); on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

system-deps:
	@bash .ci/system-deps

# The whole suite; the hosts tier (tests/hosts) runs in it when root, and skips otherwise.
# Two workers (pytest-xdist, a test file per worker) for everything but the tests that measure
# a rate or a timing against a real link (marker `serial`: the hosts tier, the shared budget),
# which run alone afterwards so nothing else loads the machine while they measure.
test: venv system-deps
	$(PY) -m pytest -q --durations=25 -n 2 --dist loadfile -m "not serial" tests/ $(PYTEST_ARGS)
	$(PY) -m pytest -q --durations=10 -m serial tests/ $(PYTEST_ARGS)

# The hosts tier alone: every node a real host in its own network namespace with a shaped
# link, partitions, loss and blocked ports (needs root; docs/hosts.md).
test-hosts: venv system-deps
	$(PY) -m pytest -q tests/hosts/ $(PYTEST_ARGS)

# The seeded fault campaign (docs/chaos.md): SEEDS seeds from SEED_START, one line per seed
# (chaos seed=S lost=L unsafe_deletes=U torn=T deletions=D faults=F); fails on any L/U/T > 0 or
# D = 0. `make test` runs one short seed (tests/chaos/test_chaos.py).
SEEDS ?= 3
SEED_START ?= 1
CHAOS_FAULT_SECONDS ?= 150
CHAOS_HEAL_SECONDS ?= 60
chaos: venv system-deps
	$(PY) bench/chaos.py --seeds $(SEEDS) --seed-start $(SEED_START) \
		--fault-seconds $(CHAOS_FAULT_SECONDS) --heal-seconds $(CHAOS_HEAL_SECONDS)

demo: venv
	$(VENV)/bin/ringsync demo

# push_1gib.py runs rsync_baseline.py's measurements in the same run.
bench: venv system-deps
	$(PY) bench/push_1gib.py

# The dashboard under 64 nodes, 200 transfers and 1,000 events/s for 10 minutes.
bench-tui: venv
	$(PY) bench/tui_load.py

# A GPU node over its cleanup threshold: deletions/s and s per GiB vouched behind live vouches
# (every holder re-hashes), 400 x 64 KiB and 8 x 256 MiB (hash_concurrency 2 and 1).
bench-cleanup: venv
	$(PY) bench/cleanup.py

# The background scrub of 2 GiB of stored copies: MB/s and CPU s/GiB at 2GiB/s and 16MiB/s,
# CPU % at the gentle rate, time to find a rotted copy.
bench-scrub: venv
	$(PY) bench/scrub.py

# Gossip spread in simulation (the engine's protocol, real manifests): rounds until every
# node knows a new artifact at N = 32 and 256, fanout 3 and 1; bytes of an idle exchange.
bench-gossip: venv
	$(PY) bench/gossip_sim.py

# /health latency, RSS and CPU of a node idle, under 2,000 idle connections and under 300
# slow-header connections.
bench-connections: venv
	$(PY) bench/connections.py

# Real hosts in network namespaces (root): rates against tbf links and engine limits (with a
# raw TCP baseline), then partition -> NODE_SUSPECT/NODE_DOWN and heal -> NODE_RECOVERED times.
bench-hosts: venv system-deps
	$(PY) bench/hosts_links.py
	$(PY) bench/hosts_partition.py

# The 32-node example config as real hosts, the demo generator on its 24 GPU nodes for
# SCALE_SECONDS: every artifact verified on the coordinator, its CPU, RSS, manifest size and
# the event rate.
SCALE_SECONDS ?= 180
bench-hosts-scale: venv system-deps
	$(PY) bench/hosts_scale.py --duration $(SCALE_SECONDS)


# The rsync transport against plain rsync (1 GiB), and 1,000 small files by HTTP and BatchRsync.
bench-rsync: venv system-deps
	$(PY) bench/rsync_transport.py
	$(PY) bench/many_files.py

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info bench/out snapshot_report.html
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
