"""Cold start: importing function_app must not load the heavy SDKs (they load on first use)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

HEAVY = ("twilio.rest", "azure.identity", "azure.keyvault", "azure.storage", "azure.data.tables",
         # shared.telemetry records through the OpenTelemetry API only once something else has loaded it (the
         # worker's distro); the SDK and the exporter are the worker's to load, never the app's import.
         "opentelemetry", "azure.monitor")


def test_importing_function_app_loads_no_heavy_sdk():
    code = ("import json, sys, function_app; "
            f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({HEAVY!r}))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True)
    assert json.loads(out.stdout) == []


def test_importing_function_app_indexes_without_any_setting():
    code = "import function_app; print(len(function_app.app.get_functions()))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True, env={"PATH": "/usr/bin:/bin"})
    assert int(out.stdout) >= 6
