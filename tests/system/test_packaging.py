"""``pip install .`` (not editable): the installed program finds its styles and configs."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]


def test_wheel_carries_configs_and_styles_and_the_installed_copy_finds_them(
        tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(wheels), str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("ringsync-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"engine/_config_files/local.yaml", "engine/_config_files/distributed_hosts.yaml",
            "engine/manifest/schema.sql", "ringsync_tui/_styles/dashboard.tcss", "ringsync_tui/_styles/app.tcss"} <= names
    assert any(n.endswith("entry_points.txt") for n in names)

    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                              "--target", str(target), str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    probe = ("import engine, engine.resources as r, engine.config as c;"
             "print(engine.__file__); print(r.config_dir()); print(r.styles_dir());"
             "c.load_config(c.default_config_path()); print('loaded')")
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    module, config_dir, styles_dir, loaded = out.stdout.split()
    assert module.startswith(str(target)), "imported the checkout, not the installed copy"
    assert config_dir == str(target / "engine" / "_config_files")
    assert styles_dir == str(target / "ringsync_tui" / "_styles")
    assert (Path(styles_dir) / "dashboard.tcss").is_file() and loaded == "loaded"
