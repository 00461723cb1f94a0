"""Gate 1: every Bicep file parses with pycep (checkov's parser). checkov only *counts* a syntax error as a
parsing error and still exits 0, so this gate is what turns a broken file into a red suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.infra.infra_tools import INFRA, infra_tool, parse_bicep

EXPECTED_FILES = {
    "main.bicep",
    "modules/alerts.bicep",
    "modules/appsettings.bicep",
    "modules/workbook.bicep",
    "modules/functionapp.bicep",
    "modules/identity.bicep",
    "modules/keyvault.bicep",
    "modules/monitoring.bicep",
    "modules/roles.bicep",
    "modules/secret.bicep",
    "modules/storage.bicep",
}


def test_every_infra_bicep_file_parses_with_pycep(bicep_parse: dict[str, Any]) -> None:
    parsed = {str(Path(p).relative_to(INFRA)) for p in bicep_parse["trees"]}
    assert bicep_parse["errors"] == {}
    assert bicep_parse["exit_code"] == 0
    assert parsed == {str(p.relative_to(INFRA)) for p in INFRA.rglob("*.bicep")}
    assert EXPECTED_FILES <= parsed


def test_every_module_main_references_exists_and_parses(bicep: dict[str, Any]) -> None:
    for source, tree in bicep.items():
        for name, module in tree.get("modules", {}).items():
            target = (INFRA / source).parent / module["detail"]["path"]
            assert target.exists(), f"{source}: module {name} points at missing {target}"
            assert str(target.resolve().relative_to(INFRA.resolve())) in bicep


BROKEN_SNIPPETS = {
    "unclosed_object": "param location string\nresource st 'Microsoft.Storage/storageAccounts@2024-01-01' = {\n"
                       "  name: 'x'\n  location: location\n",
    "lambda_pycep_cannot_read": "param names array\nvar upper = map(names, n => toUpper(n))\n",
    "missing_resource_body": "resource st 'Microsoft.Storage/storageAccounts@2024-01-01' =\n",
}


@pytest.mark.parametrize("snippet", sorted(BROKEN_SNIPPETS))
def test_parse_gate_reports_a_broken_bicep_file(tmp_path: Path, snippet: str) -> None:
    good = tmp_path / "good.bicep"
    good.write_text("param location string\noutput where string = location\n")
    broken = tmp_path / f"{snippet}.bicep"
    broken.write_text(BROKEN_SNIPPETS[snippet])

    result = parse_bicep(tmp_path)

    assert result["exit_code"] == 1
    assert set(result["errors"]) == {str(broken)}
    assert str(good) in result["trees"]


def test_missing_infra_venv_fails_with_the_make_target_named(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="make install-infra"):
        infra_tool("checkov", venv=tmp_path / "no-such-venv")
