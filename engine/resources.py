"""Where the installed program finds its shipped files (styles, configs).

A wheel carries them inside the packages (see pyproject's force-include); a
source checkout has them at the repository root. Look in that order.
"""

from __future__ import annotations

from pathlib import Path

_ENGINE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The directory holding local.yaml and distributed_hosts.yaml."""
    packaged = _ENGINE_DIR / "_config_files"
    return packaged if packaged.is_dir() else _ENGINE_DIR.parent / "config"


def styles_dir() -> Path:
    """The directory holding the dashboard's .tcss files."""
    packaged = _ENGINE_DIR.parent / "ringsync_tui" / "_styles"
    return packaged if packaged.is_dir() else _ENGINE_DIR.parent / "styles"
