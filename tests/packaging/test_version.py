"""``surgeguard --version``: the installed distribution's version, from its metadata."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The console script pip installed next to this interpreter (the user's command).
SURGEGUARD = Path(sys.executable).with_name("surgeguard")
VERSION_MODULE = ROOT / "surgeguard" / "version.py"


def test_version_prints_the_installed_distributions_version() -> None:
    result = subprocess.run(
        [str(SURGEGUARD), "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert result.stdout == f"surgeguard {declared}\n"
    assert version("surgeguard") == declared
    assert result.stderr == ""


def test_version_needs_no_subcommand_and_python_m_says_the_same() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "surgeguard", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"surgeguard {version('surgeguard')}\n"


def test_a_source_tree_that_was_never_installed_reports_an_unknown_version() -> None:
    # -S: no site-packages, and the module loaded from its file alone, so no
    # surgeguard metadata can be found (as in a bare checkout on sys.path).
    script = (
        "import importlib.util as u, sys\n"
        f"spec = u.spec_from_file_location('version', {str(VERSION_MODULE)!r})\n"
        "module = u.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(module.installed_version())\n"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "0+unknown\n"
