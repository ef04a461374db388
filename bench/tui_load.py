"""Dashboard under load: 64 nodes, 200 live transfers, 1,000 events per second.

    .venv/bin/python bench/tui_load.py [--minutes 10] [--presses 40] [--idle-seconds 30]

Runs the real RingsyncApp (headless driver, 160x50) over a SyntheticSource and prints:
- idle CPU: the app over a 64-node cluster where nothing moves;
- key press -> screen latency: ``space`` toggles pause-all; the time from the key press until
  the header on screen shows the new state (median, p95 over ``--presses`` presses);
- the app process's CPU use over the whole run (percent of one core; the synthetic source that
  generates the events runs in the same process and is included);
- resident memory sampled every 30 s (it must be flat after the first minute).
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ringsync_tui.app import RingsyncApp  # noqa: E402
from ringsync_tui.synthetic import SyntheticSource  # noqa: E402
from ringsync_tui.widgets import ClusterHeader, EventsPane  # noqa: E402


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def press_latency(app: RingsyncApp, presses: int) -> list[float]:
    """Seconds from a ``space`` key event until the header shows the new pause state.

    The key goes in as a real key event (``App.simulate_key``), through the bindings, the
    action's worker, the source, the poll and the panes; the clock stops when the header's
    content has changed (the compositor paints it on its next frame, <= 1/60 s later; the
    headless driver has no terminal to paint to). Pilot.press is not used: it also waits for
    every widget to go idle, which never happens under 1,000 events/s.
    """
    header = app.main.query_one(ClusterHeader)
    samples = []
    for _ in range(presses):
        want = not (app.snapshot and app.snapshot.all_paused)
        started = time.perf_counter()
        app.simulate_key("space")
        while ("PAUSED" in str(header.render())) != want:
            await asyncio.sleep(0.0005)
        samples.append(time.perf_counter() - started)
        await asyncio.sleep(0.3)
    return samples


async def idle_cpu(seconds: float) -> float:
    """Percent of one core the app uses over a 64-node cluster where nothing happens."""
    app = RingsyncApp(SyntheticSource(nodes=64, transfers=0, events_per_second=0, animate=False))
    async with app.run_test(size=(160, 50)):
        await asyncio.sleep(2.0)
        cpu0, wall0 = cpu_seconds(), time.monotonic()
        await asyncio.sleep(seconds)
        return 100 * (cpu_seconds() - cpu0) / (time.monotonic() - wall0)


async def run(minutes: float, presses: int, idle_seconds: float) -> None:
    if idle_seconds > 0:
        print(f"idle: {await idle_cpu(idle_seconds):.1f} % of one core over {idle_seconds:g} s"
              " (64 nodes, no transfers, no events)", flush=True)
    source = SyntheticSource(nodes=64, transfers=200, events_per_second=1000)
    app = RingsyncApp(source)
    async with app.run_test(size=(160, 50)):
        await asyncio.sleep(2.0)  # warm up
        latency = await press_latency(app, presses)
        cpu0, wall0, events0 = cpu_seconds(), time.monotonic(), source.emitted
        samples: list[tuple[float, float]] = [(0.0, rss_mib())]
        end = wall0 + minutes * 60
        while time.monotonic() < end:
            await asyncio.sleep(min(30.0, end - time.monotonic()))
            samples.append((time.monotonic() - wall0, rss_mib()))
        wall = time.monotonic() - wall0
        cpu = cpu_seconds() - cpu0
        events = source.emitted - events0
        shown = len(list(app.main.query_one(EventsPane).visible_rows()))
    latency.sort()
    p95 = latency[min(len(latency) - 1, int(0.95 * len(latency)))]
    print(f"load: 64 nodes, 200 live transfers, {events / wall:.0f} events/s for {wall:.0f} s"
          f" (events pane holds {shown})")
    print(f"key press -> screen: median {statistics.median(latency) * 1000:.1f} ms,"
          f" p95 {p95 * 1000:.1f} ms over {len(latency)} presses")
    print(f"cpu: {100 * cpu / wall:.1f} % of one core (app + synthetic event generator)")
    print("rss MiB: " + ", ".join(f"{t / 60:.1f}min={m:.1f}" for t, m in samples))
    after_first = [m for t, m in samples if t >= 60] or [samples[-1][1]]
    print(f"rss growth after the first minute: {after_first[-1] - after_first[0]:+.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--presses", type=int, default=40)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    args = parser.parse_args()
    asyncio.run(run(args.minutes, args.presses, args.idle_seconds))


if __name__ == "__main__":
    main()
