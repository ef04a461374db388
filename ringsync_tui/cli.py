"""The ``ringsync`` command.

    ringsync --engine-only --config FILE --node NAME   one headless node (never loads textual)
    ringsync demo [--headless --duration S --json]      the local cluster of config/local.yaml
"""

from __future__ import annotations

import argparse
import sys

from engine.main import add_node_arguments, run_engine


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ringsync", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine-only", action="store_true",
                        help="run one node headless until SIGTERM/SIGINT")
    add_node_arguments(parser)
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="run the local demo cluster")
    demo.add_argument("--config", dest="demo_config", default=None,
                      help="cluster config (default: the packaged config/local.yaml)")
    demo.add_argument("--workdir", default=".ringsync-demo",
                      help="where node data roots and logs go (default: ./.ringsync-demo)")
    demo.add_argument("--headless", action="store_true", help="no live view")
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

        return run_demo(args)
    print("ringsync: the dashboard is not built yet; use `ringsync demo` or "
          "`ringsync --engine-only --config FILE --node NAME`", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
