"""Gate 3: the Bicep (as pycep reads it) agrees with the code and the design: every setting the app reads is an
app setting (secrets excepted), queue/table names match, the roles are the right built-in roles, nothing secret
reaches an app setting, and the Flex Consumption / hardening properties the design names are set."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from shared.config import SETTINGS
from tests.infra.infra_tools import INFRA, ROOT, load_yaml

# Built-in role definition ids, checked against learn.microsoft.com "Azure built-in roles".
ROLE_IDS = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}
STORAGE_ROLES = {ROLE_IDS[n] for n in ("Storage Blob Data Owner", "Storage Queue Data Contributor",
                                       "Storage Table Data Contributor")}
DESIGN_QUEUES = {"outbound-sms", "outbound-calls", "inbound-sms"}
# Each send's final outcome for consumers outside the app (issue 23): written by the app, read by no function of
# it, so it has no -poison twin. Empty OUTCOMES_QUEUE = none written.
OUTCOMES_QUEUE = "outbound-outcomes"
# Telemetry (shared/telemetry.py, README "Telemetry and metrics"): settings the Functions worker reads, not the app,
# so they are not in shared.config.SETTINGS; deployed with these values, in the local example with the second.
WORKER_TELEMETRY_SETTINGS = {
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": ("true", "false"),
    "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": (
        "azure_sdk,django,fastapi,flask,httpx,psycopg2,requests,urllib,urllib3",
        "azure_sdk,django,fastapi,flask,httpx,psycopg2,requests,urllib,urllib3"),
}
DESIGN_TABLES = {"sends", "optouts", "guardrails"}  # guardrails: shared/guardrails.py (README, Guardrails)
IDENTITY_STORAGE_SETTINGS = {
    "AzureWebJobsStorage__accountName", "AzureWebJobsStorage__credential", "AzureWebJobsStorage__clientId",
    "AzureWebJobsStorage__blobServiceUri", "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
}
FLEX_REJECTED_SETTINGS = {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INTERP = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


# ------------------------------------------------------------------ reading pycep's tree
def config(resource_or_module: dict[str, Any]) -> dict[str, Any]:
    """The body of a resource/module, looking through pycep's wrapper for `if (...)` and `for` forms."""
    body = resource_or_module["config"]
    while "config" in body and ("condition" in body or "loop_type" in body):
        body = body["config"]
    return body


def resolve(value: Any, scope: dict[str, Any]) -> Any:
    """Substitute variables/parameters known in ``scope`` (bare references, `${x}` interpolation, `a.b` access)."""
    if isinstance(value, str):
        if _IDENT.match(value) and value in scope:
            return resolve(scope[value], scope)
        return _INTERP.sub(lambda m: str(resolve(m[1], scope)) if m[1] in scope and isinstance(
            resolve(m[1], scope), (str, int)) else m[0], value)
    if isinstance(value, list):
        return [resolve(v, scope) for v in value]
    if isinstance(value, dict):
        op = value.get("operator", {})
        if op.get("type") == "property_accessor":
            base = resolve(op["operands"]["operand_1"], scope)
            key = op["operands"]["operand_2"]
            if isinstance(base, dict) and isinstance(key, str) and key in base:
                return resolve(base[key], scope)
            return value
        return {k: resolve(v, scope) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def main(bicep: dict[str, Any]) -> dict[str, Any]:
    return bicep["main.bicep"]


@pytest.fixture(scope="module")
def main_scope(main: dict[str, Any]) -> dict[str, Any]:
    scope = {name: p["default"] for name, p in main["parameters"].items() if "default" in p}
    scope.update({name: v["value"] for name, v in main["variables"].items()})
    return scope


def module_params(main: dict[str, Any], name: str, scope: dict[str, Any]) -> dict[str, Any]:
    return resolve(config(main["modules"][name])["params"], scope)


@pytest.fixture(scope="module")
def app_scope(main: dict[str, Any], main_scope: dict[str, Any], bicep: dict[str, Any]) -> dict[str, Any]:
    """The function-app module's parameters as main.bicep binds them (defaults where main passes nothing)."""
    module = bicep["modules/functionapp.bicep"]
    scope = {name: p["default"] for name, p in module["parameters"].items() if "default" in p}
    scope.update(module_params(main, "api", main_scope))
    return scope


@pytest.fixture(scope="module")
def function_app(bicep: dict[str, Any]) -> dict[str, Any]:
    resources = bicep["modules/functionapp.bicep"]["resources"]
    sites = [r for r in resources.values() if r["type"] == "Microsoft.Web/sites"]
    assert len(sites) == 1
    return config(sites[0])


@pytest.fixture(scope="module")
def app_settings_raw(function_app: dict[str, Any]) -> dict[str, Any]:
    entries = function_app["properties"]["siteConfig"]["appSettings"]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), f"duplicate app settings: {names}"
    return {e["name"]: e["value"] for e in entries}


@pytest.fixture(scope="module")
def app_settings(app_settings_raw: dict[str, Any], app_scope: dict[str, Any]) -> dict[str, Any]:
    return resolve(app_settings_raw, app_scope)


# ------------------------------------------------------------------ settings
def test_every_non_secret_setting_the_code_reads_is_an_app_setting(app_settings: dict[str, Any],
                                                                     function_app: dict[str, Any]) -> None:
    missing = []
    for setting in SETTINGS:
        if setting.secret:
            continue
        if setting.name == "AzureWebJobsStorage":
            missing += sorted(IDENTITY_STORAGE_SETTINGS - set(app_settings))
        elif setting.name == "FUNCTIONS_WORKER_RUNTIME":
            assert function_app["properties"]["functionAppConfig"]["runtime"]["name"] == setting.default == "python"
        elif setting.name not in app_settings:
            missing.append(setting.name)
    assert missing == []


def test_storage_is_identity_based_with_no_connection_string(app_settings: dict[str, Any]) -> None:
    assert "AzureWebJobsStorage" not in app_settings
    assert app_settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert app_settings["AzureWebJobsStorage__clientId"] == app_settings["AZURE_CLIENT_ID"]


def test_no_secret_and_no_flex_rejected_setting_is_an_app_setting(app_settings: dict[str, Any]) -> None:
    secret_names = {s.name for s in SETTINGS if s.secret}
    assert secret_names == {"TWILIO_AUTH_TOKEN", "TWILIO_API_KEY_SECRET", "TWILIO_WEBHOOK_SHARED_KEY"}
    assert not (secret_names | FLEX_REJECTED_SETTINGS) & set(app_settings)


def test_every_setting_is_in_local_settings_example() -> None:
    values = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    assert [s.name for s in SETTINGS if s.name not in values] == []


def test_outcomes_queue_setting_is_deployed_local_and_created(app_settings: dict[str, Any], main: dict[str, Any],
                                                               main_scope: dict[str, Any]) -> None:
    values = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    assert app_settings["OUTCOMES_QUEUE"] == values["OUTCOMES_QUEUE"] == OUTCOMES_QUEUE
    assert OUTCOMES_QUEUE in module_params(main, "storage", main_scope)["queueNames"]
    assert {s.name: s.default for s in SETTINGS}.get("OUTCOMES_QUEUE", OUTCOMES_QUEUE) == OUTCOMES_QUEUE


def test_worker_streams_telemetry_with_open_telemetry_and_no_url_instrumentation(
        app_settings: dict[str, Any]) -> None:
    """host.json telemetryMode OpenTelemetry + the worker's distro: each record exported once (by the worker), and
    no HTTP/Azure SDK spans whose URLs hold phone numbers (shared/telemetry.py says why)."""
    host = json.loads((ROOT / "host.json").read_text())
    assert host["telemetryMode"] == "OpenTelemetry"
    assert "applicationInsights" not in host.get("logging", {})  # classic-SDK sampling: ignored in OTel mode
    values = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    for name, (deployed, local) in WORKER_TELEMETRY_SETTINGS.items():
        assert app_settings[name] == deployed, name
        assert values[name] == local, name
    disabled = set(app_settings["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"].split(","))
    assert {"azure_sdk", "requests", "urllib", "urllib3", "httpx"} <= disabled
    assert "PYTHON_ENABLE_OPENTELEMETRY" not in app_settings  # that one is for an app that configures OTel itself
    requirements = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^azure-monitor-opentelemetry>=[\d.]+,<\d", requirements, re.M)  # the worker imports it


def test_telemetry_settings_are_in_the_readme_settings_table() -> None:
    section = (ROOT / "README.md").read_text().split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert [n for n in WORKER_TELEMETRY_SETTINGS if not any(f"`{n}`" in row for row in rows)] == []


def test_every_setting_is_in_the_readme_settings_table() -> None:
    section = (ROOT / "README.md").read_text().split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert [s.name for s in SETTINGS if not any(f"`{s.name}`" in row for row in rows)] == []


def test_guardrail_settings_are_bicep_parameters_off_by_default(main: dict[str, Any],
                                                                 app_settings: dict[str, Any]) -> None:
    names = {"ALLOWED_DESTINATIONS": "allowedDestinations", "MAX_SENDS_PER_RECIPIENT_PER_HOUR":
             "maxSendsPerRecipientPerHour", "MAX_SENDS_PER_HOUR": "maxSendsPerHour",
             "AUTO_REPLY_MIN_INTERVAL_SECONDS": "autoReplyMinIntervalSeconds"}
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    for setting, param in names.items():
        assert main["parameters"][param]["default"] == "" and app_settings[setting] == "", setting
        assert params[param]["value"] == "${" + setting + "}", setting


def test_app_settings_with_a_code_default_deploy_that_default(app_settings: dict[str, Any]) -> None:
    for setting in SETTINGS:
        if setting.default and setting.name in app_settings:
            assert app_settings[setting.name] == setting.default, setting.name


def test_public_base_url_is_the_apps_own_https_host(app_settings_raw: dict[str, Any],
                                                      app_scope: dict[str, Any]) -> None:
    assert app_settings_raw["PUBLIC_BASE_URL"] == "https://${name}.azurewebsites.net"
    assert app_scope["name"].startswith("func-")


def test_app_insights_uses_identity_ingestion(app_settings: dict[str, Any], bicep: dict[str, Any],
                                              app_settings_raw: dict[str, Any]) -> None:
    assert app_settings_raw["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == \
        "ClientId=${identityClientId};Authorization=AAD"
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in app_settings
    components = [config(r) for r in bicep["modules/monitoring.bicep"]["resources"].values()
                  if r["type"] == "Microsoft.Insights/components"]
    assert [c["properties"]["DisableLocalAuth"] for c in components] == [True]


# ------------------------------------------------------------------ no secrets in settings
def test_no_app_setting_value_is_or_carries_a_secret(app_settings_raw: dict[str, Any], main: dict[str, Any],
                                                     bicep: dict[str, Any]) -> None:
    text = json.dumps(app_settings_raw).lower()
    for marker in ("listkeys", "list_keys", "accountkey=", "sharedaccesssignature", "sig=", "password"):
        assert marker not in text, marker
    module = bicep["modules/functionapp.bicep"]
    assert [n for n, p in module["parameters"].items()
            if any(d["type"] == "secure" for d in p["decorators"])] == []
    secure = {n for n, p in main["parameters"].items() if any(d["type"] == "secure" for d in p["decorators"])}
    assert secure == {"twilioAuthToken", "twilioApiKeySecret", "twilioWebhookSharedKey"}
    bound = json.dumps(config(main["modules"]["api"])["params"])
    assert [n for n in secure if re.search(rf"\b{n}\b", bound)] == []


def test_no_bicep_file_reads_keys(bicep: dict[str, Any]) -> None:
    for path in INFRA.rglob("*.bicep"):
        assert not re.search(r"\blist(Keys|AccountSas|ServiceSas|Secrets)\s*\(", path.read_text(), re.I), path


def test_secure_token_only_reaches_key_vault_secrets(main: dict[str, Any], bicep: dict[str, Any]) -> None:
    bound = {name: json.dumps(config(m)["params"]) for name, m in main["modules"].items()}
    assert [n for n, text in bound.items() if "twilioAuthToken" in text] == ["keyVault"]
    kv = bicep["modules/keyvault.bicep"]["modules"]
    secrets = {config(m)["params"]["name"]: m for m in kv.values()}
    assert set(secrets) == {"twilio-auth-token", "twilio-api-key-secret", "twilio-webhook-shared-key"}
    token = secrets["twilio-auth-token"]
    assert config(token)["params"]["value"] == "twilioAuthToken"
    assert "empty" in json.dumps(token["config"]["condition"]), "secret must be written only when non-empty"


# ------------------------------------------------------------------ queues, tables, roles
def test_queues_and_tables_match_design_and_code_defaults(main: dict[str, Any], main_scope: dict[str, Any],
                                                          bicep: dict[str, Any]) -> None:
    params = module_params(main, "storage", main_scope)
    defaults = {s.name: s.default for s in SETTINGS}
    code_queues = {defaults["SMS_QUEUE"], defaults["CALL_QUEUE"], defaults["INBOUND_QUEUE"]}
    assert code_queues == DESIGN_QUEUES
    assert sorted(params["queueNames"]) == sorted(code_queues | {f"{q}-poison" for q in code_queues}
                                                  | {OUTCOMES_QUEUE})
    assert sorted(params["tableNames"]) == sorted(DESIGN_TABLES)
    resources = bicep["modules/storage.bicep"]["resources"]
    loops = {r["type"].rsplit("/", 1)[-1]: r["config"]["loop_type"]["detail"]["array_name"]
             for r in resources.values() if "loop_type" in r["config"]}
    assert loops == {"queues": "queueNames", "tables": "tableNames"}


def test_role_ids_are_the_well_known_built_in_roles(main_scope: dict[str, Any]) -> None:
    assert set(main_scope["roleIds"].values()) == set(ROLE_IDS.values())


def test_app_identity_and_developer_get_the_right_roles(main: dict[str, Any], main_scope: dict[str, Any]) -> None:
    app = module_params(main, "appRoles", main_scope)
    assert app["principalType"] == "ServicePrincipal"
    assert set(app["storageRoleIds"]) == STORAGE_ROLES
    assert app["keyVaultRoleId"] == ROLE_IDS["Key Vault Secrets User"]
    assert app["assignMetricsPublisher"] is True
    assert app["metricsPublisherRoleId"] == ROLE_IDS["Monitoring Metrics Publisher"]

    dev_module = main["modules"]["developerRoles"]
    assert "principalId" in json.dumps(dev_module["config"]["condition"])
    assert config(dev_module)["params"]["principalType"] == "principalType"  # from azd: AZURE_PRINCIPAL_TYPE
    dev = module_params(main, "developerRoles", main_scope)
    assert dev["principalType"] == "User"
    assert set(dev["storageRoleIds"]) == STORAGE_ROLES
    assert dev["keyVaultRoleId"] == ROLE_IDS["Key Vault Secrets Officer"]


def test_role_assignments_have_guid_names_principal_type_and_scope(bicep: dict[str, Any]) -> None:
    assignments = {n: config(r) for n, r in bicep["modules/roles.bicep"]["resources"].items()
                   if r["type"] == "Microsoft.Authorization/roleAssignments"}
    assert {a["scope"] for a in assignments.values()} == {"storage", "vault", "appInsights"}
    for name, body in assignments.items():
        assert body["name"]["function"]["type"] == "guid", name
        assert body["properties"]["principalType"] == "principalType", name
        assert body["properties"]["roleDefinitionId"]["function"]["type"] == "subscription_resource_id", name


# ------------------------------------------------------------------ Flex Consumption, hardening, outputs
def test_function_app_is_flex_consumption_linux_python(function_app: dict[str, Any], bicep: dict[str, Any],
                                                       app_scope: dict[str, Any], main: dict[str, Any]) -> None:
    plans = [config(r) for r in bicep["modules/functionapp.bicep"]["resources"].values()
             if r["type"] == "Microsoft.Web/serverfarms"]
    assert [(p["sku"]["name"], p["sku"]["tier"], p["properties"]["reserved"]) for p in plans] == \
        [("FC1", "FlexConsumption", True)]
    assert function_app["kind"] == "functionapp,linux"
    props = function_app["properties"]
    assert props["httpsOnly"] is True
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    assert "ftpsState" not in props["siteConfig"]  # ARM rejects it for Flex Consumption sites (51021)
    flex = resolve(props["functionAppConfig"], app_scope)
    storage = flex["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["value"] == "${blobEndpoint}" + app_scope["deploymentContainerName"]
    raw_auth = props["functionAppConfig"]["deployment"]["storage"]["authentication"]
    assert raw_auth == {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "identityId"}
    assert "identity" in json.dumps(app_scope["identityId"]) and '"id"' in json.dumps(app_scope["identityId"])
    assert flex["runtime"] == {"name": "python", "version": "3.11"}
    assert flex["scaleAndConcurrency"] == {"instanceMemoryMB": 2048, "maximumInstanceCount": 100,
                                           "triggers": {"http": {"perInstanceConcurrency": 16}}}
    assert "'azd-service-name'" in json.dumps(function_app["tags"])
    assert main["parameters"]["pythonVersion"]["default"] == "3.11"


def test_storage_and_key_vault_hardening(bicep: dict[str, Any]) -> None:
    accounts = [config(r)["properties"] for r in bicep["modules/storage.bicep"]["resources"].values()
                if r["type"] == "Microsoft.Storage/storageAccounts"]
    assert [(a["allowSharedKeyAccess"], a["minimumTlsVersion"], a["allowBlobPublicAccess"],
             a["supportsHttpsTrafficOnly"]) for a in accounts] == [(False, "TLS1_2", False, True)]
    vaults = [config(r)["properties"] for r in bicep["modules/keyvault.bicep"]["resources"].values()
              if r["type"] == "Microsoft.KeyVault/vaults"]
    assert [(v["enableRbacAuthorization"], v["enableSoftDelete"], v["enablePurgeProtection"]) for v in vaults] == \
        [(True, True, True)]


def test_outputs_give_the_twilio_webhook_urls(main: dict[str, Any]) -> None:
    outputs = {name: o["value"] for name, o in main["outputs"].items()}
    base = "https://${api.outputs.hostName}"
    assert outputs["VOICE_WEBHOOK_URL"] == base + "/api/voice"
    assert outputs["SMS_WEBHOOK_URL"] == base + "/api/sms"
    assert outputs["MESSAGE_STATUS_CALLBACK_URL"] == base + "/api/status/message"
    assert outputs["CALL_STATUS_CALLBACK_URL"] == base + "/api/status/call"
    for name in ("AZURE_FUNCTION_APP_NAME", "KEY_VAULT_NAME", "KEY_VAULT_URL", "AZURE_STORAGE_ACCOUNT_NAME"):
        assert name in outputs


def test_webhook_output_paths_are_routes_of_the_app(main: dict[str, Any],
                                                    indexed_functions: dict[str, Any]) -> None:
    routes = {getattr(b, "route", None) for fn in indexed_functions.values() for b in fn.get_bindings()}
    for name in ("VOICE_WEBHOOK_URL", "SMS_WEBHOOK_URL", "MESSAGE_STATUS_CALLBACK_URL", "CALL_STATUS_CALLBACK_URL"):
        path = main["outputs"][name]["value"].split("/api/", 1)[1]
        assert path in routes, f"{name}: no function serves /api/{path}"


def test_resource_names_come_from_the_azd_resource_token(main: dict[str, Any]) -> None:
    token = json.dumps(main["variables"]["resourceToken"])
    assert '"unique_string"' in token and "environmentName" in token and "location" in token
    assert main["globals"]["scope"]["value"] == "subscription"
    group = config(main["resources"]["rg"])
    assert group["tags"] == "tags" and main["variables"]["tags"]["value"] == {"'azd-env-name'": "environmentName"}


# ------------------------------------------------------------------ azd wiring
def test_parameters_file_maps_azd_variables_onto_declared_parameters(main: dict[str, Any]) -> None:
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert params["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert params["location"]["value"] == "${AZURE_LOCATION}"
    assert params["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
    assert set(params) <= set(main["parameters"]), set(params) - set(main["parameters"])
    required = {n for n, p in main["parameters"].items() if "default" not in p}
    assert required <= set(params)


def test_azure_yaml_deploys_this_folder_as_the_python_function_service() -> None:
    doc = load_yaml(ROOT / "azure.yaml")
    assert doc["services"]["api"] == {"project": ".", "language": "python", "host": "function"}
    assert doc.get("infra", {}).get("path", "infra") == "infra"
