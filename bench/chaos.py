"""Run the chaos campaign for several seeds: one line per seed, non-zero exit on any failure.

    python bench/chaos.py --seeds N [--seed-start S] [--fault-seconds 150] [--heal-seconds 60]

Each seed prints ``chaos seed=S lost=L unsafe_deletes=U torn=T deletions=D faults=F``; the
details (faults run, deletions checked, what was lost or deleted unsafely) are in
``<workdir>/seed-S/chaos-seed-S.log``. Data roots are removed after each seed unless
CHAOS_KEEP=1; logs and ledgers are kept.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.chaos.campaign import run_seed  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=int(os.environ.get("SEEDS", "3")))
    ap.add_argument("--seed-start", type=int, default=int(os.environ.get("SEED_START", "1")))
    ap.add_argument("--fault-seconds", type=float,
                    default=float(os.environ.get("CHAOS_FAULT_SECONDS", "150")))
    ap.add_argument("--heal-seconds", type=float,
                    default=float(os.environ.get("CHAOS_HEAL_SECONDS", "60")))
    ap.add_argument("--workdir", default=os.environ.get("CHAOS_WORKDIR"))
    args = ap.parse_args()
    # SIGTERM (make interrupted, a CI timeout) unwinds like Ctrl-C: every cluster, network
    # namespace and mount the seed made is torn down by its own finally blocks
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ringsync-chaos-"))
    print(f"chaos: details per seed in {workdir}/seed-S/chaos-seed-S.log", flush=True)
    failed = False
    for seed in range(args.seed_start, args.seed_start + args.seeds):
        sdir = workdir / f"seed-{seed}"
        try:
            result = run_seed(seed, sdir, args.fault_seconds, args.heal_seconds)
        except Exception as exc:  # the harness itself broke: say so, count as a failure
            print(f"chaos seed={seed} error={type(exc).__name__}: {exc} (log {sdir})", flush=True)
            failed = True
            continue
        finally:
            if not os.environ.get("CHAOS_KEEP"):
                shutil.rmtree(sdir / "cluster" / "nodes", ignore_errors=True)
                shutil.rmtree(sdir / "snapshots", ignore_errors=True)
        print(result.line(), flush=True)
        failed |= not result.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
