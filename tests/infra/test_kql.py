"""Every KQL query in the repo parses and binds under Microsoft's Kusto parser (issue 20, item 1).

A scheduled query rule is validated when Azure creates it, so a query the parser rejects stops `azd up`; a README
query that does not parse fails in the user's hands. The regex simulation of `parse` in
tests/unit/test_outcome_log_format.py checks the fields, not the language: it could not see that `kind` is a
reserved word. Here each query goes through @kusto/language-service-next (npm devDependency, pinned in
package-lock.json) via tests/infra/kql_check.mjs, bound to Application Insights' tables (traces, requests,
exceptions with their real columns), and must give no error.

Where queries are found (and the test fails if it finds none, or fewer than the files hold):
- infra/modules/alerts.bicep: the `query` of every criterion of every `scheduledQueryRules` resource, with the
  Bicep variables it is built from substituted (as ARM would) and Bicep escapes undone;
- infra/modules/workbook.bicep: every `query` in the workbook's content;
- every Markdown file (README.md, docs/, bench/): each ```kusto (or ```kql) block, split into queries at blank
  lines, as the Logs editor splits them. KQL-looking text in any other fence, or in any other file outside
  tests/, fails the test: it would escape the check.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.infra.infra_tools import INFRA, ROOT
from tests.infra.test_bicep_consistency import config

CHECKER = Path(__file__).with_name("kql_check.mjs")
KUSTO_PACKAGE = ROOT / "node_modules" / "@kusto" / "language-service-next" / "package.json"
PINNED_VERSION = "12.4.1"
ALERTS = "modules/alerts.bicep"
WORKBOOK = "modules/workbook.bicep"
KQL_FENCES = {"kusto", "kql"}
# A table of App Insights piped into a tabular operator: how a query starts (used to find KQL left unchecked).
KQL_LIKE = re.compile(r"\b(traces|requests|exceptions|dependencies|customEvents|customMetrics|pageViews"
                      r"|availabilityResults)"
                      r"\s*\|\s*(where|parse|summarize|project|extend|take|limit|count|order|sort|top|join|render"
                      r"|distinct|make-series)\b")
SKIP_DIRS = {"node_modules", ".venv", ".venv-infra", ".git", "tests", ".cache", ".azurite", ".pytest_cache",
             ".hypothesis", "__pycache__", ".tools", "results"}
SCANNED_SUFFIXES = {".md", ".bicep", ".json", ".yaml", ".yml", ".py", ".js", ".mjs", ".txt", ".ps1", ".sh"}
_FENCE = re.compile(r"^```(\S*)\s*$")
_INTERPOLATION = re.compile(r"(?<!\\)\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ESCAPES = {"\\\\": "\\", "\\'": "'", "\\n": "\n", "\\r": "\r", "\\t": "\t", "\\$": "$"}


@dataclass
class Query:
    source: str          # path relative to the repo root
    name: str            # resource / workbook item / "line N" in a Markdown file
    text: str
    dimensions: list[str] = field(default_factory=list)   # alert dimensions: must be result columns
    measure: str | None = None                             # alert metricMeasureColumn: must be a result column

    @property
    def id(self) -> str:
        return f"{self.source} [{self.name}]"


# ------------------------------------------------------------------ Bicep strings as ARM sees them
def _unescape(raw: str) -> str:
    out = re.sub(r"\\u\{([0-9A-Fa-f]+)\}", lambda m: chr(int(m[1], 16)), raw)
    return re.sub(r"\\[\\'nrt$]", lambda m: _ESCAPES[m[0]], out)


def bicep_string(raw: Any, variables: dict[str, Any], where: str) -> str:
    """A Bicep string literal (as pycep keeps it: escapes raw) with `${variable}` interpolations substituted."""
    if isinstance(raw, str) and raw in variables and re.fullmatch(r"[A-Za-z_]\w*", raw):
        return bicep_string(variables[raw], variables, where)  # a bare reference to a variable
    assert isinstance(raw, str), f"{where}: query is not a string literal or variable: {raw!r}"
    parts, last = [], 0
    for match in [*_INTERPOLATION.finditer(raw), None]:
        literal = raw[last:match.start() if match else len(raw)]
        assert not re.search(r"(?<!\\)\$\{", literal), f"{where}: interpolation not understood: {literal}"
        parts.append(_unescape(literal))
        if match:
            assert match[1] in variables, f"{where}: ${{{match[1]}}} is not a variable of the file"
            parts.append(bicep_string(variables[match[1]], variables, where))
            last = match.end()
    return "".join(parts)


def _variables(tree: dict[str, Any]) -> dict[str, Any]:
    return {name: v["value"] for name, v in tree.get("variables", {}).items()}


def alert_queries(bicep: dict[str, Any]) -> list[Query]:
    tree = bicep[ALERTS]
    variables = _variables(tree)
    found = []
    for name, resource in tree["resources"].items():
        if resource["type"] != "Microsoft.Insights/scheduledQueryRules":
            continue
        for i, criterion in enumerate(config(resource)["properties"]["criteria"]["allOf"]):
            text = bicep_string(criterion["query"], variables, f"{ALERTS} {name}")
            found.append(Query(f"infra/{ALERTS}", f"{name} criterion {i}", text,
                               [d["name"] for d in criterion.get("dimensions", [])],
                               criterion.get("metricMeasureColumn")))
    return found


def _walk_queries(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "query":
                yield f"{path}.{node.get('title', key)}", value
            else:
                yield from _walk_queries(value, f"{path}.{node.get('name', key)}" if key == "content" else path)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_queries(item, path)


def workbook_queries(bicep: dict[str, Any]) -> list[Query]:
    tree = bicep[WORKBOOK]
    variables = _variables(tree)
    return [Query(f"infra/{WORKBOOK}", where.lstrip("."), bicep_string(raw, variables, f"{WORKBOOK} {where}"))
            for where, raw in _walk_queries(variables["content"], "")]


# ------------------------------------------------------------------ Markdown
def repo_files(suffixes: set[str]) -> list[Path]:
    """Files of the repo with these suffixes, not descending into node_modules, venvs, tests/ and the like."""
    found = []
    for directory, subdirs, files in os.walk(ROOT):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIP_DIRS)
        found += [Path(directory, f) for f in sorted(files) if Path(f).suffix in suffixes]
    return found


def markdown_files() -> list[Path]:
    return repo_files({".md"})


def fenced_blocks(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """(language, first line number, lines) of every ``` fence."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i].strip())
        if opening is None:
            i += 1
            continue
        start, body = i + 2, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        yield opening[1].lower(), start, body
        i += 1


def markdown_queries(path: Path, root: Path = ROOT) -> list[Query]:
    found = []
    for language, start, body in fenced_blocks(path.read_text()):
        if language not in KQL_FENCES:
            continue
        chunk: list[str] = []
        for offset, line in enumerate([*body, ""]):
            if line.strip():
                chunk.append(line)
                continue
            if any(not c.strip().startswith("//") for c in chunk):
                first = start + offset - len(chunk)
                title = next((c.strip("/ ") for c in chunk if c.strip().startswith("//")), "")
                found.append(Query(str(path.relative_to(root)), f"line {first}: {title}".rstrip(": "),
                                   "\n".join(chunk)))
            chunk = []
    return found


def unchecked_kql_in_markdown(path: Path, root: Path = ROOT) -> list[str]:
    """KQL-looking lines outside ```kusto fences: prose or another fence's language (the check would miss it)."""
    text = path.read_text()
    inside = set()
    for language, start, body in fenced_blocks(text):
        if language in KQL_FENCES:
            inside.update(range(start, start + len(body)))
    return [f"{path.relative_to(root)}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1)
            if n not in inside and KQL_LIKE.search(line)]


@pytest.fixture(scope="module")
def queries(bicep: dict[str, Any]) -> list[Query]:
    found = alert_queries(bicep) + workbook_queries(bicep)
    for path in markdown_files():
        found += markdown_queries(path)
    return found


# ------------------------------------------------------------------ the parser
def run_checker(texts: dict[str, str]) -> dict[str, dict[str, Any]]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found: the KQL check runs Microsoft's Kusto parser on Node.js", pytrace=False)
    if not KUSTO_PACKAGE.exists():
        pytest.fail(f"{KUSTO_PACKAGE.parent} missing: run `make install-dev` (npm ci)", pytrace=False)
    payload = json.dumps([{"id": key, "text": text} for key, text in texts.items()])
    proc = subprocess.run([node, str(CHECKER)], input=payload, capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == 0, f"kql_check.mjs failed (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return {r["id"]: r for r in json.loads(proc.stdout)}


def errors(result: dict[str, Any]) -> list[str]:
    return [f"{d['code']} {d['message']} near {d['near']!r}" for d in result["diagnostics"]
            if d["severity"] == "Error"]


@pytest.fixture(scope="module")
def checked(queries: list[Query]) -> dict[str, dict[str, Any]]:
    ids = [q.id for q in queries]
    assert len(ids) == len(set(ids)), f"two queries with one name: {ids}"
    return run_checker({q.id: q.text for q in queries})


# ------------------------------------------------------------------ tests
def test_the_parser_is_microsofts_pinned_package() -> None:
    assert json.loads((ROOT / "package.json").read_text())["devDependencies"]["@kusto/language-service-next"] \
        == PINNED_VERSION
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/@kusto/language-service-next"]["version"] == PINNED_VERSION
    assert json.loads(KUSTO_PACKAGE.read_text())["version"] == PINNED_VERSION


def test_every_query_in_the_repo_is_found(queries: list[Query], bicep: dict[str, Any]) -> None:
    by_source: dict[str, list[Query]] = {}
    for query in queries:
        by_source.setdefault(query.source, []).append(query)
    # As many queries as the Bicep files have `query:` properties (none hidden from the extractor) ...
    for path in (ALERTS, WORKBOOK):
        declared = len(re.findall(r"^\s*query:", (INFRA / path).read_text(), re.MULTILINE))
        assert declared > 0 and len(by_source.get(f"infra/{path}", [])) == declared, path
    rules = [r for r in bicep[ALERTS]["resources"].values() if r["type"] == "Microsoft.Insights/scheduledQueryRules"]
    assert len(by_source[f"infra/{ALERTS}"]) == len(rules) == 5
    assert len(by_source[f"infra/{WORKBOOK}"]) == 9
    assert len(by_source["README.md"]) >= 4
    # ... and no KQL anywhere else: not in another fence or prose, not in another file outside tests/.
    stray = [line for path in markdown_files() for line in unchecked_kql_in_markdown(path)]
    sources = {ROOT / "infra" / ALERTS, ROOT / "infra" / WORKBOOK, *markdown_files()}
    for path in repo_files(SCANNED_SUFFIXES):
        if path not in sources and KQL_LIKE.search(path.read_text(errors="replace")):
            stray.append(f"{path.relative_to(ROOT)}: KQL outside the checked places")
    assert stray == []


def test_every_query_parses_and_binds_against_application_insights(queries: list[Query],
                                                                   checked: dict[str, dict[str, Any]]) -> None:
    failing = {q.id: errors(checked[q.id]) for q in queries if errors(checked[q.id])}
    assert failing == {}, "\n".join(f"{k}:\n  " + "\n  ".join(v) for k, v in failing.items())


def test_alert_dimensions_and_measures_are_columns_the_query_returns(queries: list[Query],
                                                                    checked: dict[str, dict[str, Any]]) -> None:
    """Azure rejects a log alert whose dimension or measure column the query does not produce."""
    alerts = [q for q in queries if q.source == f"infra/{ALERTS}"]
    assert any(q.dimensions for q in alerts) and any(q.measure for q in alerts)
    for query in alerts:
        columns = checked[query.id]["columns"]
        assert set(query.dimensions) <= set(columns), (query.id, columns)
        assert query.measure is None or query.measure in columns, (query.id, columns)


def test_outcome_queries_split_the_line_into_channel_id_outcome_and_detail(
        queries: list[Query], checked: dict[str, dict[str, Any]]) -> None:
    parsing = [q for q in queries if 'parse message with "outbound "' in q.text]
    assert {q.source for q in parsing} >= {f"infra/{WORKBOOK}", "README.md"}  # the alerts read metrics
    dead_letters = next(q for q in parsing if "Dead letters (per message)" in q.name)
    assert checked[dead_letters.id]["columns"] == ["timestamp", "channel", "id", "reason", "detail"]


def test_metric_queries_read_the_apps_metric_names_and_attributes(queries: list[Query],
                                                                  checked: dict[str, dict[str, Any]]) -> None:
    """Every customMetrics query names a metric shared.telemetry records and reads only attributes it sets."""
    from shared import telemetry

    attributes = {telemetry.SENDS: {"outcome", "channel"}, telemetry.DEAD_LETTERS: {"reason", "channel"},
                  telemetry.RECONCILIATIONS: {"verdict", "channel"}, telemetry.TWILIO_DURATION: {"operation"},
                  telemetry.WEBHOOK_REJECTIONS: {"reason", "route"},
                  telemetry.PACING_DEFERRALS: {"priority", "reason"}}
    metric_queries = [q for q in queries if "customMetrics" in q.text]
    named = {name for q in metric_queries for name in re.findall(r'name == "([^"]+)"', q.text)}
    assert named == set(attributes)  # each metric is shown somewhere, and nothing else is read
    for query in metric_queries:
        [name] = re.findall(r'name == "([^"]+)"', query.text)
        read = set(re.findall(r"customDimensions\.([A-Za-z_.]+)", query.text))
        assert read and read <= attributes[name], (query.id, read)
    alerts = {q.measure: q for q in metric_queries if q.source == f"infra/{ALERTS}"}
    assert set(alerts) == {"dead_letters", "deferred"}
    assert alerts["dead_letters"].dimensions == ["reason"]
    assert checked[alerts["dead_letters"].id]["columns"] == ["reason", "channel", "dead_letters"]
    assert checked[alerts["deferred"].id]["columns"] == ["deferred"]


def test_the_check_rejects_a_reserved_word_an_unknown_column_and_an_unknown_table() -> None:
    """The check can fail: the old `kind` parse, a column App Insights does not have, a table it does not have."""
    results = run_checker({
        "reserved": 'traces | parse message with "outbound " kind " id=" id | project kind, id',
        "column": "requests | where resultcode == '500'",
        "table": "AppTraces | take 1",
        "fine": 'traces | parse message with "outbound " channel " id=" id | project channel, id',
    })
    assert any("kind" in e or "Expected" in e for e in errors(results["reserved"]))
    assert any("resultcode" in e for e in errors(results["column"]))
    assert any("AppTraces" in e for e in errors(results["table"]))
    assert errors(results["fine"]) == [] and results["fine"]["columns"] == ["channel", "id"]


def test_markdown_extraction_splits_blocks_at_blank_lines_and_ignores_other_fences(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text("text\n```kusto\n// one\ntraces | take 1\n\n// two\nrequests\n| take 2\n```\n"
                   "```bash\ntraces | where x\n```\n")
    found = [(q.source, q.name, q.text) for q in markdown_queries(doc, tmp_path)]
    assert found == [("x.md", "line 3: one", "// one\ntraces | take 1"),
                     ("x.md", "line 6: two", "// two\nrequests\n| take 2")]
    assert unchecked_kql_in_markdown(doc, tmp_path) == ["x.md:11: traces | where x"]


def test_bicep_strings_are_read_as_arm_reads_them() -> None:
    variables = {"base": "traces | where message has \\'x\\'", "n": "5"}
    assert bicep_string("${base} | take ${n}", variables, "t") == "traces | where message has 'x' | take 5"
    assert bicep_string("base", variables, "t") == "traces | where message has 'x'"
    assert bicep_string("a \\${base} \\\\d", variables, "t") == "a ${base} \\d"
    with pytest.raises(AssertionError):
        bicep_string("${missing} | take 1", variables, "t")
