"""The ``ringsync`` command.

    ringsync [--config FILE] [--node NAME]             the dashboard, coordinator engine embedded
    ringsync tui --config FILE [--node NAME]           the same, spelled out
    ringsync --engine-only --config FILE --node NAME   one headless node (never loads textual)
    ringsync demo [--headless --duration S --json]     the local cluster of config/local.yaml,
                                                       shown in the dashboard unless --headless
"""

from __future__ import annotations

import argparse
from engine.main import add_node_arguments, run_engine

THEMES = ("textual-dark", "textual-light")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ringsync", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine-only", action="store_true",
                        help="run one node headless until SIGTERM/SIGINT")
    add_node_arguments(parser)
    parser.add_argument("--theme", choices=THEMES, default=THEMES[0], help="dashboard theme")
    sub = parser.add_subparsers(dest="command")
    tui = sub.add_parser("tui", help="the dashboard on the coordinator (the default command)")
    add_node_arguments(tui)
    tui.add_argument("--theme", choices=THEMES, default=THEMES[0], help="dashboard theme")
    demo = sub.add_parser("demo", help="run the local demo cluster")
    demo.add_argument("--config", dest="demo_config", default=None,
                      help="cluster config (default: the packaged config/local.yaml)")
    demo.add_argument("--workdir", default=".ringsync-demo",
                      help="where node data roots and logs go (default: ./.ringsync-demo)")
    demo.add_argument("--headless", action="store_true", help="no dashboard: run, then summarise")
    demo.add_argument("--theme", choices=THEMES, default=THEMES[0], help="dashboard theme")
    demo.add_argument("--duration", type=float, default=None,
                      help="stop after this many seconds (default: until Ctrl-C)")
    demo.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    demo.add_argument("--fresh", action="store_true", help="wipe the workdir first")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.engine_only:
        return run_engine(args)
    if args.command == "demo":
        from engine.demo.run import run_demo

        if args.headless:
            return run_demo(args)
        from ringsync_tui.dashboard import demo_view  # loads textual only now

        return run_demo(args, demo_view(args.theme))
    from ringsync_tui.dashboard import run_dashboard  # loads textual only now

    return run_dashboard(args.config, args.node, args.theme)


if __name__ == "__main__":
    raise SystemExit(main())
