"""Helpers for the offline infra checks: the infra venv (checkov + pycep) is called by subprocess.

The infra venv is built by `make install-infra`. When it is missing the checks FAIL (never skip): a green run must
mean the Bicep was actually parsed and scanned.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
INFRA_VENV = ROOT / ".venv-infra"
DUMP_SCRIPT = Path(__file__).with_name("infra_dump.py")

SKIP_COMMENT = re.compile(r"//\s*checkov:skip=(?P<id>[A-Z0-9_]+)(?::(?P<reason>.*))?$", re.MULTILINE)


def infra_tool(name: str, venv: Path = INFRA_VENV) -> Path:
    """Path of an executable in the infra venv; fails the test with the fix when the venv is not built."""
    tool = venv / "bin" / name
    if not tool.exists():
        pytest.fail(f"{tool} not found: the infra checks need their own venv; run `make install-infra` first",
                    pytrace=False)
    return tool


def parse_bicep(*paths: Path) -> dict[str, Any]:
    """pycep's JSON tree of every .bicep file under ``paths`` plus parse errors (empty when all parse)."""
    proc = subprocess.run([str(infra_tool("python")), str(DUMP_SCRIPT), "bicep", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode not in (0, 1) or not proc.stdout:
        pytest.fail(f"infra_dump.py crashed (exit {proc.returncode}): {proc.stderr[-2000:]}", pytrace=False)
    result = json.loads(proc.stdout)
    result["exit_code"] = proc.returncode
    return result


def load_yaml(path: Path) -> Any:
    proc = subprocess.run([str(infra_tool("python")), str(DUMP_SCRIPT), "yaml", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def run_checkov(directory: Path) -> dict[str, Any]:
    """`checkov --framework bicep -d DIR -o json` (offline: --skip-download); returns the report."""
    proc = subprocess.run(
        [str(infra_tool("checkov")), "--framework", "bicep", "-d", str(directory), "-o", "json", "--skip-download"],
        capture_output=True, text=True, timeout=300, cwd=directory)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov gave no JSON (exit {proc.returncode}): {proc.stdout[-1000:]} {proc.stderr[-2000:]}",
                    pytrace=False)
    # One framework gives one report object; an empty directory gives a bare summary.
    if isinstance(report, list):
        pytest.fail(f"checkov ran more than the bicep framework: {[r.get('check_type') for r in report]}",
                    pytrace=False)
    report["exit_code"] = proc.returncode
    return report


def skip_comments(directory: Path = INFRA) -> list[tuple[str, str, str]]:
    """Every `// checkov:skip=ID: reason` in the Bicep files: (file, check id, reason)."""
    found = []
    for file in sorted(directory.rglob("*.bicep")):
        for match in SKIP_COMMENT.finditer(file.read_text()):
            found.append((str(file.relative_to(directory)), match["id"], (match["reason"] or "").strip()))
    return found
