"""Session fixtures for the infra checks: the parsed Bicep tree and one checkov report of infra/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.infra.infra_tools import INFRA, parse_bicep, run_checkov


@pytest.fixture(scope="session")
def bicep_parse() -> dict[str, Any]:
    return parse_bicep(INFRA)


@pytest.fixture(scope="session")
def bicep(bicep_parse: dict[str, Any]) -> dict[str, Any]:
    """pycep JSON of each infra file, keyed by path relative to infra/ ('main.bicep', 'modules/storage.bicep')."""
    assert not bicep_parse["errors"], f"Bicep that pycep cannot parse: {bicep_parse['errors']}"
    return {str(Path(path).relative_to(INFRA)): tree
            for path, tree in bicep_parse["trees"].items()}


@pytest.fixture(scope="session")
def checkov_report() -> dict[str, Any]:
    return run_checkov(INFRA)
