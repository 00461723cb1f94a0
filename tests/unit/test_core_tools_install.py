"""``make run`` and the pinned Core Tools npm package: never installed on a Node.js its engines refuse, and a failed
install explained in one readable line (its installer crashed with ``chalk.red is not a function`` on Node 20)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from devhost import run

CRASH_LOG = """\
npm warn EBADENGINE Unsupported engine {
npm warn EBADENGINE   package: 'azure-functions-core-tools@4.15.1',
npm warn EBADENGINE   required: { node: '>=22' },
npm warn EBADENGINE   current: { node: 'v21.7.3', npm: '10.5.0' }
npm warn EBADENGINE }
npm error code 1
npm error path /home/u/switchboard/.tools/core-tools/node_modules/azure-functions-core-tools
npm error command failed
npm error command sh -c node lib/install.js
npm error /home/u/switchboard/.tools/core-tools/node_modules/azure-functions-core-tools/lib/install.js:31
npm error     console.log(chalk.red(`Could not install Core Tools`));
npm error                       ^
npm error
npm error TypeError: chalk.red is not a function
npm error     at Object.<anonymous> (/home/u/.../lib/install.js:31:23)
npm error A complete log of this run can be found in: /home/u/.npm/_logs/debug-0.log
"""


def _tools(folder: Path, node_version: str, npm_output: str = "") -> Path:
    """A PATH folder with a ``node`` that reports ``node_version`` and an ``npm`` that prints ``npm_output``, then
    fails (and records that it ran)."""
    folder.mkdir()
    (folder / "node").write_text(f"#!/bin/sh\necho {node_version}\n")
    (folder / "npm-output.txt").write_text(npm_output)
    (folder / "npm").write_text(f"#!/bin/sh\ntouch {folder}/npm-ran\ncat {folder}/npm-output.txt\nexit 1\n")
    for name in ("node", "npm"):
        (folder / name).chmod((folder / name).stat().st_mode | stat.S_IEXEC)
    return folder


@pytest.fixture
def launcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(run, "CORE_TOOLS_DIR", tmp_path / "core-tools")
    monkeypatch.delenv("CORE_TOOLS_INSTALL", raising=False)
    return run.Launcher()


def test_core_tools_are_not_installed_on_a_node_older_than_the_package_needs(
        launcher: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    tools = _tools(tmp_path / "bin", "v20.20.2")
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}/usr/bin:/bin")
    assert launcher.local_core_tools() is None
    out = capsys.readouterr().out
    assert out == ("make run: Core Tools: azure-functions-core-tools@4.15.1 needs Node.js 22 or later and this is "
                   "Node.js 20: not installing it (install Node.js 22+ or Core Tools yourself)\n")
    assert not (tools / "npm-ran").exists()


def test_a_failed_core_tools_install_is_one_readable_line_naming_the_error_and_the_node_versions(
        launcher: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    tools = _tools(tmp_path / "bin", "v22.1.0", CRASH_LOG)  # a node that claims 22, an install that crashes anyway
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}/usr/bin:/bin")
    assert launcher.local_core_tools() is None
    lines = capsys.readouterr().out.splitlines()
    assert (tools / "npm-ran").exists()
    assert lines[-1].startswith("make run: Core Tools: local install failed: TypeError: chalk.red is not a function "
                                "(the package needs Node.js >=22 and this is v21.7.3)")
    # Remembered, and said again the same way on the next make run instead of retrying.
    assert launcher.local_core_tools() is None
    assert "chalk.red is not a function" in capsys.readouterr().out
