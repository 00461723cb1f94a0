"""The monitoring Bicep (alerts, action group, workbook) and the issue-13 infra fixes, as pycep reads them."""

from __future__ import annotations

import json
from typing import Any

from tests.infra.infra_tools import INFRA, ROOT, load_yaml
from tests.infra.test_bicep_consistency import config


def resources(bicep: dict[str, Any], path: str, kind: str) -> list[dict[str, Any]]:
    return [config(r) for r in bicep[path]["resources"].values() if r["type"] == kind and not r.get("existing")]


def test_action_group_mails_the_addresses_given_as_a_parameter(bicep: dict[str, Any]) -> None:
    [group] = resources(bicep, "modules/alerts.bicep", "Microsoft.Insights/actionGroups")
    receivers = group["properties"]["emailReceivers"]
    assert receivers["loop_type"]["detail"]["array_name"] == "emailAddresses"
    assert group["location"] == "Global" and len(group["properties"]["groupShortName"]) <= 12
    main = bicep["main.bicep"]
    assert config(main["modules"]["alerts"])["params"]["emailAddresses"]["operator"]["type"] == "conditional"
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert params["alertEmailAddresses"]["value"] == "${ALERT_EMAIL_ADDRESSES}"


def test_log_alerts_watch_dead_letters_webhook_5xx_and_function_failures(bicep: dict[str, Any]) -> None:
    rules = resources(bicep, "modules/alerts.bicep", "Microsoft.Insights/scheduledQueryRules")
    variables = {n: v["value"] for n, v in bicep["modules/alerts.bicep"]["variables"].items()}
    by_query = {r["properties"]["criteria"]["allOf"][0]["query"]: r for r in rules}
    assert set(by_query) == {"deadLetterQuery", "budgetDeferredQuery", "webhook5xxQuery", "functionFailureQuery",
                             "doubleSendQuery"}
    for rule in rules:
        props = rule["properties"]
        assert rule["kind"] == "LogAlert"
        assert props["scopes"] == ["appInsightsId"]
        assert (props["evaluationFrequency"], props["windowSize"]) == ("PT5M", "PT5M")
        assert props["actions"]["actionGroups"] == [
            {"operator": {"type": "property_accessor", "operands": {"operand_1": "actionGroup", "operand_2": "id"}}}]
    assert 'name == "switchboard.dead_letters"' in variables["deadLetterQuery"]  # the metric (shared.telemetry)
    dead_letters = by_query["deadLetterQuery"]["properties"]["criteria"]["allOf"][0]
    assert (dead_letters["threshold"], dead_letters["timeAggregation"], dead_letters["metricMeasureColumn"]) == \
        (0, "Total", "dead_letters")
    assert "resultCode) >= 500" in variables["webhook5xxQuery"]
    assert by_query["webhook5xxQuery"]["properties"]["criteria"]["allOf"][0]["metricMeasureColumn"] == "percent5xx"
    assert "success == false" in variables["functionFailureQuery"]
    assert 'name == "switchboard.pacing.deferrals"' in variables["budgetDeferredQuery"]
    assert '== "budget_exhausted"' in variables["budgetDeferredQuery"]
    budget = by_query["budgetDeferredQuery"]["properties"]["criteria"]["allOf"][0]
    assert (budget["threshold"], budget["timeAggregation"], budget["metricMeasureColumn"]) == (0, "Total", "deferred")


def test_the_double_send_alert_matches_the_lines_the_ledger_logs(bicep: dict[str, Any]) -> None:
    """The alert reads the ERROR lines shared/ledger.py writes for a second SID and for another id's SID."""
    from pathlib import Path

    variables = {n: v["value"] for n, v in bicep["modules/alerts.bicep"]["variables"].items()}
    ledger_source = (Path(__file__).resolve().parents[2] / "shared" / "ledger.py").read_text()
    for prefix in ("ledger: double_send ", "ledger: sid_mismatch "):
        assert f'startswith "{prefix}"' in variables["doubleSendQuery"]
        assert f'"{prefix}%s' in ledger_source  # the format string the ERROR record is made from
    rules = resources(bicep, "modules/alerts.bicep", "Microsoft.Insights/scheduledQueryRules")
    [rule] = [r for r in rules if r["properties"]["criteria"]["allOf"][0]["query"] == "doubleSendQuery"]
    assert rule["properties"]["severity"] == 1 and rule["properties"]["criteria"]["allOf"][0]["threshold"] == 0


def test_twilio_secret_expiry_raises_an_alert_through_the_action_group(bicep: dict[str, Any]) -> None:
    [topic] = resources(bicep, "modules/alerts.bicep", "Microsoft.EventGrid/systemTopics")
    assert topic["properties"]["topicType"] == "Microsoft.KeyVault.vaults"
    [subscription] = resources(bicep, "modules/alerts.bicep", "Microsoft.EventGrid/systemTopics/eventSubscriptions")
    props = subscription["properties"]
    assert props["destination"]["endpointType"] == "MonitorAlert"
    assert "Microsoft.KeyVault.SecretNearExpiry" in props["filter"]["includedEventTypes"]
    assert props["eventDeliverySchema"] == "CloudEventSchemaV1_0"
    secret = bicep["modules/secret.bicep"]["resources"]["secret"]["config"]["properties"]["attributes"]
    assert secret["exp"] == "expiresOn"  # without an expiry date Key Vault never sends SecretNearExpiry


def test_workbook_shows_its_views_on_app_insights(bicep: dict[str, Any], indexed_functions: dict[str, Any]) -> None:
    [book] = resources(bicep, "modules/workbook.bicep", "Microsoft.Insights/workbooks")
    assert book["kind"] == "shared" and book["properties"]["sourceId"] == "appInsightsId"
    assert book["properties"]["serializedData"]["function"]["type"] == "string"
    variables = bicep["modules/workbook.bicep"]["variables"]
    items = variables["content"]["value"]["items"]
    titles = {i["content"].get("title") for i in items if i["type"] == 3}
    assert titles == {"Sends by outcome", "Twilio delivery statuses (status callbacks)", "Dead letters by reason",
                      "Dead letters (per message)", "Reconciliations of in-doubt sends by verdict",
                      "Twilio call duration by operation (s)", "Webhook latency percentiles (ms)",
                      "Webhook rejections by reason and route", "Pacing deferrals by priority and reason"}
    latency = next(i for i in items if i["name"] == "webhook-latency")["content"]["query"]
    assert "percentiles(duration, 50, 95, 99)" in latency
    webhook_names = {n.strip().strip('"') for n in variables["webhookNames"]["value"].split(",")}
    http = {name for name, fn in indexed_functions.items()
            if any(b.type == "httpTrigger" for b in fn.get_bindings())}
    assert webhook_names == http


def test_location_is_an_azd_location_limited_to_flex_regions(bicep: dict[str, Any]) -> None:
    decorators = {d["type"]: d["argument"] for d in bicep["main.bicep"]["parameters"]["location"]["decorators"]}
    assert decorators["metadata"] == {"azd": {"type": "location"}}
    assert {"eastus", "westeurope", "australiaeast"} <= set(decorators["allowed"])
    assert "westindia" not in decorators["allowed"]


def test_python_versions_offered_are_those_flex_runs(bicep: dict[str, Any]) -> None:
    """Flex Consumption documents Python 3.10-3.12; 3.10 is left out (the app targets 3.11+). 3.13 is not on it."""
    decorators = {d["type"]: d["argument"] for d in bicep["main.bicep"]["parameters"]["pythonVersion"]["decorators"]}
    assert decorators["allowed"] == ["3.11", "3.12"]
    assert set(decorators["allowed"]) <= {"3.10", "3.11", "3.12"}


def test_deployer_principal_type_comes_from_azd(bicep: dict[str, Any]) -> None:
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert params["principalType"]["value"] == "${AZURE_PRINCIPAL_TYPE=User}"
    allowed = {d["type"]: d["argument"] for d in bicep["main.bicep"]["parameters"]["principalType"]["decorators"]}
    assert set(allowed["allowed"]) == {"User", "ServicePrincipal"}


def test_no_plain_parameter_is_named_like_a_secret(bicep: dict[str, Any]) -> None:
    """Bicep's secure-secrets-in-params linter flags string parameters named *secret*/*password* without @secure."""
    for path, tree in bicep.items():
        for name, param in tree["parameters"].items():
            secure = any(d["type"] == "secure" for d in param["decorators"])
            if param["type"] in ("string", "object") and not secure:
                assert not any(word in name.lower() for word in ("secret", "password")), f"{path}: {name}"


def test_public_base_url_is_set_from_the_apps_default_host_name(bicep: dict[str, Any]) -> None:
    params = config(bicep["main.bicep"]["modules"]["publicUrl"])["params"]
    assert params["publicBaseUrl"] == "https://${api.outputs.hostName}"
    [settings] = resources(bicep, "modules/appsettings.bicep", "Microsoft.Web/sites/config")
    assert settings["name"] == "appsettings"
    text = json.dumps(settings["properties"])
    assert "union" in text and "PUBLIC_BASE_URL" in text and "/config/appsettings" in text


def test_azure_yaml_keeps_both_hooks_bytecode_before_packaging_and_the_number_after_provisioning() -> None:
    """load_yaml refuses a repeated key: two ``hooks:`` blocks once made azd drop the prepackage one."""
    doc = load_yaml(ROOT / "azure.yaml")
    assert set(doc["hooks"]) == {"prepackage", "postprovision"}
    for platform in ("posix", "windows"):
        assert "compileall" in (ROOT / doc["hooks"]["prepackage"][platform]["run"]).read_text()


def test_post_provision_hook_is_wired_and_never_deployed() -> None:
    doc = load_yaml(ROOT / "azure.yaml")
    hook = doc["hooks"]["postprovision"]
    for platform in ("posix", "windows"):
        assert "infra/hooks/configure_twilio_number.py" in (ROOT / hook[platform]["run"]).read_text()
    assert "infra/" in (ROOT / ".funcignore").read_text().split()
