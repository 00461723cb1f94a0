"""What `azd up` deploys, as a user controls it (issue 20, items 5-8).

- README (Deploy, parameters table) <-> infra/main.parameters.json <-> infra/main.bicep: every parameter can be set
  from the azd environment, under the variable the README names, with the Bicep default;
- zone redundancy keeps its host storage ZRS; Python versions are the ones Flex runs;
- the Twilio secrets reach Key Vault only when a deployment is asked to write them (TWILIO_WRITE_SECRETS);
- Flex's HTTP per-instance concurrency is set on purpose, beside the thread count.
Bicep conditions are evaluated here the way ARM would for the few operators the templates use.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.infra.infra_tools import INFRA, ROOT
from tests.infra.test_bicep_consistency import config

_VALUE = re.compile(r"^\$\{(?P<var>[A-Z][A-Z0-9_]*)(?:=(?P<default>[^}]*))?\}$")
HOOK_VARIABLES = {"TWILIO_NUMBER_CLEAR_OVERRIDES"}  # read by the hooks only, not Bicep parameters


@pytest.fixture(scope="module")
def main(bicep: dict[str, Any]) -> dict[str, Any]:
    return bicep["main.bicep"]


@pytest.fixture(scope="module")
def parameters_file() -> dict[str, str]:
    return {n: p["value"] for n, p in json.loads((INFRA / "main.parameters.json").read_text())["parameters"].items()}


@pytest.fixture(scope="module")
def deploy_section() -> str:
    return (ROOT / "README.md").read_text().split("\n## Deploy\n", 1)[1].split("\n## ", 1)[0]


def evaluate(expr: Any, scope: dict[str, Any]) -> Any:
    """The value of a pycep expression: identifiers from ``scope``, literals, ?:, &&, ||, !, empty()."""
    if isinstance(expr, str):
        return scope[expr] if expr in scope else expr
    if not isinstance(expr, dict):
        return expr
    if "function" in expr:
        function = expr["function"]
        assert function["type"] == "empty", function
        return not evaluate(function["parameters"]["item_to_test"], scope)
    op = expr["operator"]
    kind, operands = op["type"], op["operands"]
    if kind == "conditional":
        branch = "true_value" if evaluate(operands["condition"], scope) else "false_value"
        return evaluate(operands[branch], scope)
    if kind == "and":
        return bool(evaluate(operands["operand_1"], scope)) and bool(evaluate(operands["operand_2"], scope))
    if kind == "or":
        return bool(evaluate(operands["operand_1"], scope)) or bool(evaluate(operands["operand_2"], scope))
    if kind == "not":
        return not evaluate(operands["bool_value"], scope)
    raise AssertionError(f"operator {kind} not understood")


def bicep_default_text(param: dict[str, Any]) -> str | None:
    default = param.get("default")
    if default is None:
        return None
    if isinstance(default, bool):
        return "true" if default else "false"
    return str(default)


def readme_parameter_rows(section: str) -> dict[str, tuple[str, str | None]]:
    """Bicep parameter -> (azd variable, default) from the Deploy section's parameters table."""
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not re.fullmatch(r"`[A-Z][A-Z0-9_]*`", cells[0]) or not cells[1].startswith("`"):
            continue
        default: str | None = cells[2]
        if default.startswith("required"):
            default = None
        elif default.startswith("empty"):
            default = ""
        else:
            default = default.strip("`")
        rows[cells[1].strip("`")] = (cells[0].strip("`"), default)
    return rows


# ------------------------------------------------------------------ item 6: README <-> parameters <-> Bicep
def test_every_bicep_parameter_is_set_from_an_azd_variable_with_its_default(main: dict[str, Any],
                                                                           parameters_file: dict[str, str]) -> None:
    assert set(parameters_file) == set(main["parameters"]), \
        set(main["parameters"]) ^ set(parameters_file)
    for name, param in main["parameters"].items():
        value = _VALUE.match(parameters_file[name])
        assert value is not None, f"{name}: {parameters_file[name]!r} is not ${{VAR}} or ${{VAR=default}}"
        default = bicep_default_text(param)
        secure = any(d["type"] == "secure" for d in param["decorators"])
        if default in (None, "") or secure:
            assert value["default"] is None, f"{name}: no default in the parameters file for {default!r}"
        else:
            assert value["default"] == default, f"{name}: parameters file {value['default']!r}, Bicep {default!r}"


def test_parameters_that_feed_an_app_setting_use_the_settings_name(main: dict[str, Any], bicep: dict[str, Any],
                                                                   parameters_file: dict[str, str]) -> None:
    """`azd env set SECRET_CACHE_SECONDS 60` must reach SECRET_CACHE_SECONDS, not a Bicep-only alias."""
    site = next(config(r) for r in bicep["modules/functionapp.bicep"]["resources"].values()
                if r["type"] == "Microsoft.Web/sites")
    setting_of_module_param = {e["value"]: e["name"] for e in site["properties"]["siteConfig"]["appSettings"]
                               if isinstance(e["value"], str) and re.fullmatch(r"[a-z]\w*", e["value"])}
    bound = config(main["modules"]["api"])["params"]
    checked = 0
    for module_param, main_expr in bound.items():
        if module_param in setting_of_module_param and isinstance(main_expr, str) and main_expr in main["parameters"]:
            variable = _VALUE.match(parameters_file[main_expr])["var"]
            assert variable == setting_of_module_param[module_param], main_expr
            checked += 1
    assert checked >= 15
    infra_only = {"zoneRedundant", "instanceMemoryMB", "maximumInstanceCount", "httpPerInstanceConcurrency"}
    for name in infra_only:
        assert _VALUE.match(parameters_file[name])["var"].startswith("AZURE_"), name


def test_readme_parameter_table_matches_the_parameters_file(main: dict[str, Any], parameters_file: dict[str, str],
                                                            deploy_section: str) -> None:
    rows = readme_parameter_rows(deploy_section)
    expected = {}
    for name, value in parameters_file.items():
        match = _VALUE.match(value)
        default = bicep_default_text(main["parameters"][name])
        expected[name] = (match["var"], default)
    assert rows == expected


def test_every_azd_variable_the_readme_mentions_is_one_azd_reads(parameters_file: dict[str, str]) -> None:
    variables = {_VALUE.match(v)["var"] for v in parameters_file.values()} | HOOK_VARIABLES
    readme = (ROOT / "README.md").read_text()
    mentioned = set(re.findall(r"azd env set ([A-Z][A-Z0-9_]*)", readme))
    assert mentioned and mentioned <= variables, mentioned - variables
    hooks = "".join(p.read_text() for p in (INFRA / "hooks").iterdir() if p.is_file())
    for name in HOOK_VARIABLES | {"TWILIO_WRITE_SECRETS", "PYTHON_VERSION"}:
        assert name in hooks, name


def test_parameters_the_readme_places_in_the_parameters_file_are_there(parameters_file: dict[str, str]) -> None:
    """Any paragraph naming infra/main.parameters.json: the Bicep parameters it names (`camelCase`) are in it."""
    paragraphs = [p for p in (ROOT / "README.md").read_text().split("\n\n") if "infra/main.parameters.json" in p]
    named = {n for p in paragraphs for n in re.findall(r"`([a-z]+[A-Z][A-Za-z0-9]*)`", p)}
    assert {"maximumInstanceCount", "pythonThreadpoolThreadCount"} <= named
    assert named - set(parameters_file) == set()


# ------------------------------------------------------------------ item 5: ZRS, Python versions
@pytest.mark.parametrize("zone_redundant,sku", [(True, "Standard_ZRS"), (False, "Standard_GRS")])
def test_a_zone_redundant_app_gets_zone_redundant_host_storage(main: dict[str, Any], bicep: dict[str, Any],
                                                               zone_redundant: bool, sku: str) -> None:
    scope = {"zoneRedundant": zone_redundant}
    storage_params = config(main["modules"]["storage"])["params"]
    sku_name = evaluate(storage_params["skuName"], scope)
    assert sku_name == sku
    account = next(config(r) for r in bicep["modules/storage.bicep"]["resources"].values()
                   if r["type"] == "Microsoft.Storage/storageAccounts")
    assert evaluate(account["sku"]["name"], {"skuName": sku_name}) == sku
    allowed = {d["type"]: d["argument"] for d in bicep["modules/storage.bicep"]["parameters"]["skuName"]["decorators"]}
    assert set(allowed["allowed"]) == {"Standard_GRS", "Standard_ZRS"}
    # ... and the plan is zone-redundant exactly then.
    assert config(main["modules"]["api"])["params"]["zoneRedundant"] == "zoneRedundant"
    plan = next(config(r) for r in bicep["modules/functionapp.bicep"]["resources"].values()
                if r["type"] == "Microsoft.Web/serverfarms")
    assert plan["properties"]["zoneRedundant"] == "zoneRedundant"


# ------------------------------------------------------------------ item 7: Key Vault secrets only on purpose
@pytest.mark.parametrize("write", [True, False])
@pytest.mark.parametrize("token", ["tok-123", ""])
def test_key_vault_secrets_are_written_only_when_asked_and_given(main: dict[str, Any], bicep: dict[str, Any],
                                                                 parameters_file: dict[str, str], write: bool,
                                                                 token: str) -> None:
    """Every deployment that sets a secret adds a version and moves its expiry: a redeploy would overwrite a
    token rotated with `az keyvault secret set` since. The flag is false unless set, and one-shot (the hook)."""
    assert main["parameters"]["writeTwilioSecrets"]["default"] is False
    assert parameters_file["writeTwilioSecrets"] == "${TWILIO_WRITE_SECRETS=false}"
    kv_params = config(main["modules"]["keyVault"])["params"]
    vault = bicep["modules/keyvault.bicep"]
    scope = {"writeSecrets": evaluate(kv_params["writeSecrets"], {"writeTwilioSecrets": write}),
             "twilioAuthToken": token, "twilioApiKeySecret": token, "twilioWebhookSharedKey": token}
    modules = vault["modules"]
    assert len(modules) == 3
    for name, module in modules.items():
        assert "condition" in module["config"], name
        assert evaluate(module["config"]["condition"], scope) is (write and bool(token)), name
    assert vault["parameters"]["writeSecrets"]["default"] is False


# ------------------------------------------------------------------ item 8: HTTP per-instance concurrency
def test_http_per_instance_concurrency_is_set_beside_the_thread_count(main: dict[str, Any], bicep: dict[str, Any],
                                                                      deploy_section: str) -> None:
    site = next(config(r) for r in bicep["modules/functionapp.bicep"]["resources"].values()
                if r["type"] == "Microsoft.Web/sites")
    http = site["properties"]["functionAppConfig"]["scaleAndConcurrency"]["triggers"]["http"]
    assert http == {"perInstanceConcurrency": "httpPerInstanceConcurrency"}
    assert config(main["modules"]["api"])["params"]["httpPerInstanceConcurrency"] == "httpPerInstanceConcurrency"
    concurrency = main["parameters"]["httpPerInstanceConcurrency"]
    threads = main["parameters"]["pythonThreadpoolThreadCount"]["default"]
    assert concurrency["type"] == "int" and concurrency["default"] == int(threads) > 1
    decorators = {d["type"]: d["argument"] for d in concurrency["decorators"]}
    assert decorators["min_value"] == 1
    text = " ".join(deploy_section.split())
    assert "one execution per instance" in text and "three status callbacks" in text
    assert "perInstanceConcurrency" in text and "pythonThreadpoolThreadCount" in text
