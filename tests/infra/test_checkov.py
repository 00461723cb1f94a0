"""Gate 2: checkov's Bicep checks over infra/ (only infra/: no Python dependency or secrets scan of the repo).
Zero failed checks, zero parsing errors, and every skip is one of the reasoned ones below."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.infra.infra_tools import INFRA, run_checkov, skip_comments

# The only checks infra/ may skip, and why they cannot be met. Adding a skip means adding it here, with a reason.
ALLOWED_SKIPS = {
    # Twilio must reach the webhooks over the public internet.
    "CKV_AZURE_222": "function app public network access",
    # Twilio cannot present client certificates.
    "CKV_AZURE_17": "function app client certificates",
    # Network rules that would lock out a Flex Consumption app without VNet integration.
    "CKV_AZURE_35": "storage firewall default deny",
    "CKV_AZURE_59": "storage public network access",
    "CKV_AZURE_109": "key vault firewall default deny",
    "CKV_AZURE_189": "key vault public network access",
    # Settings the Flex Consumption plan does not have or that cost money by default.
    "CKV_AZURE_212": "numberOfWorkers (Dedicated-plan setting; Flex scales itself)",
    "CKV_AZURE_213": "platform health check (not supported on Flex Consumption)",
    "CKV_AZURE_225": "zone redundancy (region-dependent, billed always-ready instances; opt-in parameter)",
    # Flex has no FTP; ARM rejects siteConfig.ftpsState on Flex sites (51021); basic publishing auth is off.
    "CKV_AZURE_78": "FTP deployments (no ftpsState on Flex Consumption)",
    # appsettings.bicep's Microsoft.Web/sites/config 'appsettings' resource is read by checkov as web config;
    # these web-config checks apply to the site (functionapp.bicep), not to the app settings resource.
    "CKV_AZURE_13": "app service authentication (appsettings config resource, not web config)",
    "CKV_AZURE_63": "HTTP logging (appsettings config resource, not web config)",
    "CKV_AZURE_65": "detailed error messages (appsettings config resource, not web config)",
    "CKV_AZURE_66": "failed request tracing (appsettings config resource, not web config)",
    "CKV_AZURE_80": ".NET framework version (appsettings config resource, not web config)",
    "CKV_AZURE_88": "Azure Files (appsettings config resource, not web config)",
}


def checkov_problems(report: dict[str, Any]) -> list[str]:
    """What makes a checkov report red: failed checks, and parsing errors (checkov exits 0 on those)."""
    summary = report["summary"]
    problems = [f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
                for c in report.get("results", {}).get("failed_checks", [])]
    if summary.get("parsing_errors"):
        problems.append(f"{summary['parsing_errors']} parsing error(s): {report.get('results', {}).get('parsing_errors', '')}")
    return problems


def test_checkov_scans_only_the_bicep_in_infra(checkov_report: dict[str, Any]) -> None:
    assert checkov_report["check_type"] == "bicep"
    results = checkov_report["results"]
    paths = {c["file_path"] for kind in ("passed_checks", "failed_checks", "skipped_checks") for c in results[kind]}
    assert paths, "checkov evaluated nothing"
    assert all(p.endswith(".bicep") and (INFRA / p.lstrip("/")).exists() for p in paths), paths
    assert checkov_report["summary"]["resource_count"] >= 30


def test_checkov_reports_no_parsing_errors(checkov_report: dict[str, Any]) -> None:
    assert checkov_report["summary"]["parsing_errors"] == 0


def test_checkov_reports_zero_failed_checks(checkov_report: dict[str, Any]) -> None:
    assert checkov_problems(checkov_report) == []
    assert checkov_report["summary"]["failed"] == 0
    assert checkov_report["exit_code"] == 0
    assert checkov_report["summary"]["passed"] >= 25


def test_every_skip_is_allowed_and_has_a_reason(checkov_report: dict[str, Any]) -> None:
    declared = skip_comments()
    assert declared, "expected the reasoned skips (public webhooks, Flex networking)"
    for file, check_id, reason in declared:
        assert check_id in ALLOWED_SKIPS, f"{file}: skip of {check_id} is not one of the allowed skips"
        assert len(reason.split()) >= 6, f"{file}: skip of {check_id} needs a one-line reason, got {reason!r}"
    skipped = checkov_report["results"]["skipped_checks"]
    assert {c["check_id"] for c in skipped} == {check_id for _, check_id, _ in declared}, \
        "a skip comment that checkov did not apply is stale (or a skip came from elsewhere)"
    assert all(c["check_result"].get("suppress_comment", "").strip() for c in skipped)


def test_checkov_gate_goes_red_on_an_insecure_storage_account(tmp_path: Path) -> None:
    (tmp_path / "bad.bicep").write_text(
        "resource st 'Microsoft.Storage/storageAccounts@2024-01-01' = {\n"
        "  name: 'stbad'\n  location: 'westeurope'\n  kind: 'StorageV2'\n  sku: {\n    name: 'Standard_LRS'\n  }\n"
        "  properties: {\n    allowBlobPublicAccess: true\n    minimumTlsVersion: 'TLS1_0'\n"
        "    supportsHttpsTrafficOnly: false\n  }\n}\n")
    report = run_checkov(tmp_path)
    failed = {p.split()[0] for p in checkov_problems(report)}
    assert {"CKV_AZURE_3", "CKV_AZURE_44"} <= failed


def test_checkov_gate_goes_red_on_a_file_checkov_cannot_parse(tmp_path: Path) -> None:
    (tmp_path / "broken.bicep").write_text("param names array\nvar upper = map(names, n => toUpper(n))\n")
    report = run_checkov(tmp_path)
    assert report["exit_code"] == 0  # why the parse errors need a gate of their own
    assert any("parsing error" in p for p in checkov_problems(report))
