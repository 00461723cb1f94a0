// Parses and binds KQL queries with Microsoft's Kusto parser (@kusto/language-service-next, the one behind the
// Azure portal's query editors) against the Application Insights tables our queries read.
//
//   node tests/infra/kql_check.mjs < queries.json
//
// stdin:  [{"id": "...", "text": "<KQL>"}, ...]
// stdout: [{"id": "...", "diagnostics": [{"severity", "code", "message", "start", "length", "near"}],
//           "columns": ["<result column>", ...]}, ...]
// Exit 0 when every query was analysed (diagnostics or not); 2 on bad input. tests/infra/test_kql.py decides
// what is an error. The schema is App Insights' classic one (what a log alert scoped to the component and a
// workbook on it see): traces, requests, exceptions and customMetrics (where the app's OpenTelemetry metrics land:
// one row per metric, attribute set and export interval) with their real column names and types.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";

const require = createRequire(import.meta.url);
// Bridge.NET output: bridge.js defines the runtime, then the Kusto assembly registers the global `Kusto`.
require("@kusto/language-service-next/bridge.min.js");
require("@kusto/language-service-next/Kusto.Language.Bridge.min.js");

const K = globalThis.Kusto.Language;
const S = K.Symbols;

// Columns every classic Application Insights telemetry table has.
const COMMON = [
  "itemType:string", "customDimensions:dynamic", "customMeasurements:dynamic",
  "operation_Name:string", "operation_Id:string", "operation_ParentId:string", "operation_SyntheticSource:string",
  "session_Id:string", "user_Id:string", "user_AuthenticatedId:string", "user_AccountId:string",
  "application_Version:string", "client_Type:string", "client_Model:string", "client_OS:string",
  "client_IP:string", "client_City:string", "client_StateOrProvince:string", "client_CountryOrRegion:string",
  "client_Browser:string", "cloud_RoleName:string", "cloud_RoleInstance:string", "appId:string",
  "appName:string", "iKey:string", "sdkVersion:string", "itemId:string", "itemCount:int",
];
const TABLES = {
  traces: ["timestamp:datetime", "message:string", "severityLevel:int", ...COMMON],
  requests: [
    "timestamp:datetime", "id:string", "source:string", "name:string", "url:string", "success:bool",
    "resultCode:string", "duration:real", "performanceBucket:string", ...COMMON,
  ],
  exceptions: [
    "timestamp:datetime", "problemId:string", "handledAt:string", "type:string", "message:string",
    "assembly:string", "method:string", "outerType:string", "outerMessage:string", "outerAssembly:string",
    "outerMethod:string", "innermostType:string", "innermostMessage:string", "innermostAssembly:string",
    "innermostMethod:string", "severityLevel:int", "details:dynamic", ...COMMON,
  ],
  customMetrics: [
    "timestamp:datetime", "name:string", "value:real", "valueCount:int", "valueSum:real", "valueMin:real",
    "valueMax:real", "valueStdDev:real", ...COMMON,
  ],
};

function globals() {
  const tables = Object.entries(TABLES).map(
    ([name, columns]) => new S.TableSymbol.$ctor7(name, `(${columns.join(", ")})`, null));
  const database = new S.DatabaseSymbol.ctor("appinsights", tables);
  return K.GlobalState.Default.WithDatabase(database);
}

function list(readOnlyList) {
  const items = [];
  if (!readOnlyList) return items;
  const count = readOnlyList.Count;
  for (let i = 0; i < count; i++) items.push(readOnlyList.getItem(i));
  return items;
}

function analyse(state, text) {
  const code = K.KustoCode.ParseAndAnalyze(text, state);
  const diagnostics = list(code.GetDiagnostics()).map((d) => ({
    severity: d.Severity,
    code: d.Code,
    message: d.Message,
    start: d.Start,
    length: d.Length,
    near: text.slice(Math.max(0, d.Start - 30), d.Start + Math.max(d.Length, 1) + 30),
  }));
  const result = code.ResultType;
  const columns = result && result.Columns ? list(result.Columns).map((c) => c.Name) : [];
  return { diagnostics, columns };
}

const input = JSON.parse(readFileSync(0, "utf8"));
if (!Array.isArray(input)) {
  process.stderr.write("expected a JSON array of {id, text}\n");
  process.exit(2);
}
const state = globals();
const out = input.map(({ id, text }) => ({ id, ...analyse(state, text) }));
process.stdout.write(JSON.stringify(out));
