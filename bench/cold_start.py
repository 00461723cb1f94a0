"""Cold start of the package as deployed: exact wall time of fresh processes, against ``import azure.functions``.

Run alone: ``python -m bench.cold_start [--runs N]``.

What is measured is what a Flex Consumption instance runs:
- the package ``azd deploy`` ships: the repo's files filtered by ``.funcignore``, copied into a temp dir, after
  the ``prepackage`` hook of azure.yaml compiled the app's bytecode (:data:`COMPILE`); a second copy without
  bytecode shows what shipping sources alone costs;
- ``PYTHONDONTWRITEBYTECODE=1`` (a deployed package is read-only: nothing is cached between cold starts);
- the venv's interpreter and site-packages (the dependencies' bytecode is compiled by pip, there as here).

Timer: ``perf_counter`` around ``Popen`` + ``os.wait4`` (a blocking wait: no polling, unlike
``subprocess.run(timeout=...)`` whose waits sleep up to 50 ms). ``wait4`` also gives the child's CPU time.
Variants run interleaved (noise hits them alike); the median of ``--runs`` is reported.

Rows (each a ratio to a baseline run in the same loop):
- import: ``import function_app`` vs ``import azure.functions``; target <= 1.15;
- import + first webhook: import, index (``get_functions()``, as the worker does), one signed ``POST /api/sms``;
  baseline: ``azure.functions`` + a one-route app returning constant TwiML, indexed and called the same way;
  target <= 1.25;
- import + first send: import, index, one SMS queue message (pacing, opt-out read, claim, Twilio create, record,
  outcome event) against Azurite and the Twilio fake, token from the environment; baseline: the same SDK work
  (the same table reads and writes, the Twilio create, the queue write) with no app
  (``azure.data.tables`` get + create + update, ``twilio.rest`` create) in a one-function app; target <= 1.25.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlencode

from bench._common import PYTHON, ROOT, Row, Section, median, render

HEAVY = ("twilio.rest", "azure.identity", "azure.keyvault", "azure.storage", "azure.data.tables")
# What azure.yaml's prepackage hook runs (keep the two in step): checked-hash pycs stay valid whatever
# mtimes the zip and the build give the sources, and are still recompiled if a source is edited.
COMPILE = ["-m", "compileall", "-q", "-f", "--invalidation-mode", "checked-hash", "function_app.py", "shared"]

TARGET_IMPORT = 1.15
TARGET_FIRST = 1.25
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "bench-cold-auth-token-0123456789"
FROM = "+15005550006"
PUBLIC_BASE_URL = "https://switchboard.example.net"

_OUT = "class Out:\n    value = None\n    def set(self, v): self.value = v\n"
_WEBHOOK_REQUEST = (
    "import json, os\nimport azure.functions as func\n"
    "req = func.HttpRequest(method='POST', url='http://localhost:7071/api/sms', "
    "headers=json.loads(os.environ['BENCH_HEADERS']), params={}, route_params={}, "
    "body=os.environ['BENCH_BODY'].encode())\n"
)
CODE = {
    "interpreter": "pass",
    "azure.functions": "import azure.functions",
    "import": "import function_app",
    "naive eager": ("import twilio.rest, azure.identity, azure.keyvault.secrets, azure.storage.queue, "
                    "azure.data.tables, function_app"),
    "webhook baseline": _WEBHOOK_REQUEST + _OUT + (
        "app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)\n"
        "@app.route(route='sms', methods=['POST'])\n"
        "@app.queue_output(arg_name='inbound', queue_name='%INBOUND_QUEUE%', connection='AzureWebJobsStorage')\n"
        "def sms(req: func.HttpRequest, inbound: func.Out[str]) -> func.HttpResponse:\n"
        "    return func.HttpResponse('<Response/>', mimetype='text/xml')\n"
        "fn = app.get_functions()[0].get_user_function()\n"
        "assert fn(req=req, inbound=Out()).status_code == 200\n"),
    "webhook": _WEBHOOK_REQUEST + _OUT + (
        "import function_app\n"
        "fn = {f.get_function_name(): f for f in function_app.app.get_functions()}['sms'].get_user_function()\n"
        "r = fn(req=req, inbound=Out())\n"
        "assert r.status_code == 200, r.status_code\n"),
    "send baseline": (
        "import os\nimport azure.functions as func\n"
        "app = func.FunctionApp()\n"
        "@app.queue_trigger(arg_name='msg', queue_name='%SMS_QUEUE%', connection='AzureWebJobsStorage')\n"
        "def send(msg: func.QueueMessage) -> None:\n"
        "    from azure.core.exceptions import ResourceNotFoundError\n"
        "    from azure.data.tables import TableServiceClient\n"
        "    from twilio.rest import Client\n"
        "    from azure.storage.queue import QueueClient\n"
        "    ident, to = os.environ['BENCH_ID'], '+14155550100'\n"
        "    tables = TableServiceClient.from_connection_string(os.environ['AzureWebJobsStorage'])\n"
        "    table = tables.get_table_client(os.environ['BENCH_TABLE'])\n"
        "    for key in ('p1', 'p2'):  # the sender's pacing rows\n"
        "        try:\n            table.get_entity('p', key)\n        except ResourceNotFoundError:\n"
        "            pass\n"
        "    table.upsert_entity({'PartitionKey': 'p', 'RowKey': 'p1', 'horizon': 0.0})\n"
        "    try:\n        table.get_entity('o', to)\n    except ResourceNotFoundError:\n        pass\n"
        "    table.create_entity({'PartitionKey': 's', 'RowKey': ident, 'status': 'claimed'})\n"
        "    client = Client(os.environ['TWILIO_ACCOUNT_SID'], os.environ['TWILIO_AUTH_TOKEN'])\n"
        "    client.api.base_url = os.environ['TWILIO_API_BASE_URL']\n"
        "    m = client.messages.create(to=to, from_=os.environ['TWILIO_FROM_NUMBER'], body='hi', "
        "status_callback=os.environ['PUBLIC_BASE_URL'] + '/api/status/message?id=' + ident)\n"
        "    table.update_entity({'PartitionKey': 's', 'RowKey': ident, 'status': 'sent', 'sid': m.sid})\n"
        "    QueueClient.from_connection_string(os.environ['AzureWebJobsStorage'], os.environ['OUTCOMES_QUEUE'])"
        ".send_message('{\"type\": \"sent\"}')  # the outcome event\n"
        "from azure.functions.queue import QueueMessage\n"
        "app.get_functions()[0].get_user_function()(msg=QueueMessage(id='q', body=b'{}', dequeue_count=1))\n"),
    "send": (
        "import json, os\nimport function_app\nfrom azure.functions.queue import QueueMessage\n"
        "fn = {f.get_function_name(): f for f in function_app.app.get_functions()}['send_sms'].get_user_function()\n"
        "body = json.dumps({'id': os.environ['BENCH_ID'], 'to': '+14155550100', 'body': 'hi'}).encode()\n"
        "fn(msg=QueueMessage(id='q-' + os.environ['BENCH_ID'], body=body, dequeue_count=1))\n"),
}


# ---------------------------------------------------------------- the package azd deploy ships


def _funcignore_patterns(root: Path) -> list[str]:
    lines = (root / ".funcignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(rel: str, is_dir: bool, patterns: list[str]) -> bool:
    """gitignore-style match (what azd and Core Tools apply to .funcignore), for the patterns this repo uses."""
    name = rel.rsplit("/", 1)[-1]
    for pattern in patterns:
        dir_only = pattern.endswith("/")
        core = pattern.rstrip("/")
        if dir_only and not is_dir:
            continue
        anchored = "/" in core
        target = rel if anchored else name
        if fnmatch.fnmatchcase(target, core.lstrip("/")):
            return True
    return False


def build_package(dest: Path, *, bytecode: bool) -> Path:
    """Copy the repo as ``azd deploy`` would ship it into ``dest`` (sources only, then the compile step)."""
    patterns = _funcignore_patterns(ROOT)
    for here, dirs, files in os.walk(ROOT):
        rel_dir = Path(here).relative_to(ROOT).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        # __pycache__ is skipped here: the developer's own caches are stale; the hook writes fresh ones.
        dirs[:] = [d for d in dirs if d != "__pycache__" and not _ignored(rel_dir + d, True, patterns)]
        for f in files:
            if f.endswith(".pyc") or _ignored(rel_dir + f, False, patterns):
                continue
            target = dest / rel_dir / f
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(here) / f, target)
    if bytecode:
        subprocess.run([PYTHON, *COMPILE], cwd=dest, check=True, timeout=120)
    return dest


# ---------------------------------------------------------------- exact timing of a child process


def _time_once(code: str, cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one fresh ``python -c code``."""
    start = time.perf_counter()
    proc = subprocess.Popen([PYTHON, "-c", code], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read() if proc.stderr else b""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"cold-start child failed ({proc.returncode}): {err.decode(errors='replace')[-800:]}")
    return wall, usage.ru_utime + usage.ru_stime


def heavy_modules_loaded(cwd: Path, env: dict[str, str]) -> list[str]:
    code = ("import json, sys, function_app; "
            f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({HEAVY!r}))))")
    out = subprocess.run([PYTHON, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _importtime(code: str, cwd: Path, env: dict[str, str]) -> dict[str, int]:
    """module -> self time (us), from ``-X importtime``."""
    out = subprocess.run([PYTHON, "-X", "importtime", "-c", code], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    result: dict[str, int] = {}
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, name = (p.strip() for p in line[len("import time:"):].split("|", 2))
        try:
            result[name] = int(self_us)
        except ValueError:
            continue
    return result


def extra_imports(cwd: Path, env: dict[str, str], top: int = 6) -> tuple[int, list[tuple[str, int]]]:
    """Self time (us) of the modules function_app imports beyond azure.functions, and the costliest ``top``."""
    base = _importtime(CODE["azure.functions"], cwd, env)
    ours = _importtime(CODE["import"], cwd, env)
    extra = [(name, us) for name, us in ours.items() if name not in base]
    return sum(us for _, us in extra), sorted(extra, key=lambda item: -item[1])[:top]


def _webhook_env() -> dict[str, str]:
    from twilio.request_validator import RequestValidator

    params = {"From": "+14155550100", "To": FROM, "Body": "Is the shop open on Sunday?", "AccountSid": ACCOUNT_SID,
              "MessageSid": "SM" + "1" * 32, "NumMedia": "0", "ApiVersion": "2010-04-01"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_BASE_URL + "/api/sms", params)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature,
               "Host": "localhost:7071"}
    return {"BENCH_HEADERS": json.dumps(headers), "BENCH_BODY": urlencode(params)}


def run(runs: int = 15) -> Section:
    from tests.peers.azurite import start_azurite
    from bench._twilio_proc import TwilioFakeProcess

    section = Section("cold_start")
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="switchboard-pkg-")))
        shipped = build_package(tmp / "with-bytecode", bytecode=True)
        sources_only = build_package(tmp / "sources-only", bytecode=False)
        azurite = start_azurite()
        stack.callback(azurite.stop)
        twilio = TwilioFakeProcess(ACCOUNT_SID, {ACCOUNT_SID: AUTH_TOKEN})
        stack.callback(twilio.stop)

        run_id = uuid.uuid4().hex[:6]
        base_table = f"benchcold{run_id}"
        from azure.data.tables import TableServiceClient

        TableServiceClient.from_connection_string(azurite.connection_string).create_table(base_table)
        from azure.storage.queue import QueueClient

        QueueClient.from_connection_string(azurite.connection_string, f"bench-cold-outcomes-{run_id}").create_queue()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env.update({
            "PYTHONDONTWRITEBYTECODE": "1", "AzureWebJobsStorage": azurite.connection_string,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_FROM_NUMBER": FROM,
            "PUBLIC_BASE_URL": PUBLIC_BASE_URL, "TWILIO_API_BASE_URL": twilio.base_url, "KEY_VAULT_URL": "",
            "SMS_QUEUE": f"bench-cold-sms-{run_id}", "CALL_QUEUE": f"bench-cold-calls-{run_id}",
            "INBOUND_QUEUE": f"bench-cold-inbound-{run_id}", "BENCH_TABLE": base_table, **_webhook_env(),
            # As deployed: pacing on (a sender too fast to hold a send back) and outcome events on; the baseline
            # makes the same storage calls (two pacing reads and a write, the outcome event).
            "PACING": "on", "SENDER_RATES": f"{FROM}=5000", "OUTCOMES_QUEUE": f"bench-cold-outcomes-{run_id}",
        })
        variants: dict[str, tuple[str, Path]] = {
            "interpreter": (CODE["interpreter"], shipped),
            "azure.functions": (CODE["azure.functions"], shipped),
            "import": (CODE["import"], shipped),
            "import, sources only": (CODE["import"], sources_only),
            "naive eager": (CODE["naive eager"], shipped),
            "webhook baseline": (CODE["webhook baseline"], shipped),
            "webhook": (CODE["webhook"], shipped),
            "send baseline": (CODE["send baseline"], shipped),
            "send": (CODE["send"], shipped),
        }
        wall: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        counter = 0

        def once(name: str) -> tuple[float, float]:
            nonlocal counter
            counter += 1
            code, cwd = variants[name]
            return _time_once(code, cwd, {**env, "BENCH_ID": f"cold-{run_id}-{counter}"})

        for name in variants:  # first run creates tables/queues and warms the page cache; not measured
            once(name)
        twilio.reset()
        for _ in range(runs):
            for name in variants:
                w, c = once(name)
                wall[name].append(w)
                cpu[name].append(c)
        created = twilio.stats()["created"]
        if created != 2 * runs:
            section.notes.append(f"WARNING: the Twilio fake created {created} messages for {2 * runs} sends")

        med = {name: median(values) * 1000 for name, values in wall.items()}
        cpu_med = {name: median(values) * 1000 for name, values in cpu.items()}

        def row(metric: str, ours: str, base: str, base_name: str, target: float | None = None) -> Row:
            ratio = med[ours] / med[base]
            return Row("cold_start", metric, med[ours], med[base], "ms", base_name,
                       f"ratio <= {target}" if target else "", (ratio <= target) if target else None)

        heavy = heavy_modules_loaded(shipped, env)
        section.rows += [
            row(f"import function_app, deployed pkg (median of {runs})", "import", "azure.functions",
                "import azure.functions", TARGET_IMPORT),
            row("import + first webhook (signed POST /api/sms)", "webhook", "webhook baseline",
                "constant-TwiML app", TARGET_FIRST),
            row("import + first send (SMS queue msg)", "send", "send baseline", "same SDK calls, no app",
                TARGET_FIRST),
            row("import function_app, sources only (no .pyc)", "import, sources only", "azure.functions",
                "import azure.functions"),
            row("naive: all SDKs eager + function_app", "naive eager", "azure.functions", "import azure.functions"),
            Row("cold_start", "heavy SDK modules after import", float(len(heavy)), None, "", "", "== 0", not heavy),
        ]
        interp = med["interpreter"]
        above_base, above_ours = med["azure.functions"] - interp, med["import"] - interp
        section.notes.append(f"bare interpreter start {interp:.1f} ms; import cost above it: azure.functions "
                             f"{above_base:.1f} ms, function_app {above_ours:.1f} ms "
                             f"({above_ours / above_base:.2f}x), sources only "
                             f"{med['import, sources only'] - interp:.1f} ms")
        section.notes.append("child CPU ms (median): " + ", ".join(f"{n} {v:.0f}" for n, v in cpu_med.items()))
        section.notes.append("heavy modules loaded by function_app: " + (", ".join(heavy) if heavy else "none"))
        total, extra = extra_imports(shipped, env)
        section.notes.append(f"imports beyond azure.functions: {total / 1000:.1f} ms self time in all; costliest: "
                             + ", ".join(f"{name} {us / 1000:.1f} ms" for name, us in extra))
    return section


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="fresh processes per variant (>= 10)")
    args = parser.parse_args(argv)
    print(render([run(max(args.runs, 1))]))


if __name__ == "__main__":
    main()
