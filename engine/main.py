"""Headless entry: run one node until SIGTERM/SIGINT, then stop cleanly.

Used by ``ringsync --engine-only`` and ``python -m engine``. Never imports textual.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from engine.config import ConfigError, default_config_path, load_config
from engine.manifest.store import ManifestSchemaError
from engine.rootlock import RootInUse


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_to_file(path: Path, level: str = "INFO") -> None:
    """Send this process's logging to ``path`` (when a dashboard owns the terminal)."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


def add_node_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=default_config_path(),
                        help="cluster config (default: the packaged local demo cluster)")
    parser.add_argument("--node", help="which host in the config this process is")
    parser.add_argument("--log-level", default="INFO")


async def serve(config_path: Path, node_name: str) -> None:
    from engine.node import Node  # heavy imports only once the config is known good

    config = load_config(config_path)
    if node_name not in config.hosts:
        raise ConfigError(f"{node_name!r} is not a host in this config"
                          f" (hosts: {', '.join(config.hosts)})", file=str(config_path),
                          field="--node")
    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, shutdown.set)
    await Node(config, node_name, shutdown).run()


def run_engine(args: argparse.Namespace) -> int:
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format=LOG_FORMAT)
    if not args.node:
        print("ringsync: error: --node NAME is required with --engine-only", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(args.config, args.node))
    except ConfigError as exc:
        print(f"ringsync: config error: {exc}", file=sys.stderr)
        return 2
    except (OSError, RootInUse, ManifestSchemaError) as exc:
        print(f"ringsync: cannot start node {args.node}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__)
    add_node_arguments(parser)
    return run_engine(parser.parse_args(argv))
