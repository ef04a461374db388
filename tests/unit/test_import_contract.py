"""Harlequin's import contract: the headless engine never loads textual."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]

CHECK = """
import importlib, pkgutil, sys
import engine
for module in pkgutil.walk_packages(engine.__path__, "engine."):
    importlib.import_module(module.name)
import ringsync_tui.cli  # the CLI module itself must not pull textual in either
loaded = sorted(m for m in sys.modules if m == "textual" or m.startswith("textual."))
print("TEXTUAL:" + ",".join(loaded))
"""


def test_engine_and_cli_import_without_textual() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO, capture_output=True,
                         text=True, timeout=60, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("TEXTUAL:"), out.stdout


def test_the_check_would_notice_textual() -> None:
    """Guard against a check that cannot fail: importing textual shows up."""
    probe = CHECK.replace("import engine\n", "import engine, textual\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                         text=True, timeout=60, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert "TEXTUAL:textual" in out.stdout
