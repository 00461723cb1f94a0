"""Cold start: wall time of fresh processes that import the function app, against importing azure.functions.

Run alone: ``python -m bench.cold_start [--runs N]``.

Three variants, each a fresh ``python -c`` (the venv's python, cwd = repo root), run interleaved so that machine
noise hits them alike; the median of ``--runs`` is reported:

- baseline ``import azure.functions``: what any Python function app pays (the worker imports it anyway);
- ours ``import function_app``: the app as the host indexes it; target ratio to baseline <= 1.3;
- naive: every SDK imported eagerly (twilio.rest, azure.identity, azure.keyvault.secrets, azure.storage.queue,
  azure.data.tables) and then function_app: what a seed-style app that imports at module top would pay.

It also lists the heavy modules present in ``sys.modules`` after ``import function_app`` (must be none) and the
costliest imports below function_app that azure.functions does not already pay for (``-X importtime``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

from bench._common import PYTHON, ROOT, Row, Section, median, render

HEAVY = ("twilio.rest", "azure.identity", "azure.keyvault", "azure.storage", "azure.data.tables")
VARIANTS = {
    "interpreter": "pass",
    "azure.functions": "import azure.functions",
    "function_app": "import function_app",
    "naive eager": ("import twilio.rest, azure.identity, azure.keyvault.secrets, azure.storage.queue, "
                    "azure.data.tables, function_app"),
}
TARGET_RATIO = 1.3


def _time_once(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([PYTHON, "-c", code], cwd=ROOT, check=True, timeout=120,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def heavy_modules_loaded() -> list[str]:
    code = ("import json, sys, function_app; "
            f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({HEAVY!r}))))")
    out = subprocess.run([PYTHON, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _importtime(code: str) -> dict[str, int]:
    """module -> self time (us), from ``-X importtime``."""
    out = subprocess.run([PYTHON, "-X", "importtime", "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True)
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


def extra_imports(top: int = 6) -> tuple[int, list[tuple[str, int]]]:
    """Modules function_app imports that azure.functions alone does not: their total self time (us) and the
    costliest ``top`` of them."""
    base = _importtime(VARIANTS["azure.functions"])
    ours = _importtime(VARIANTS["function_app"])
    extra = [(name, us) for name, us in ours.items() if name not in base]
    return sum(us for _, us in extra), sorted(extra, key=lambda item: -item[1])[:top]


def run(runs: int = 15) -> Section:
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for code in VARIANTS.values():  # warm the page cache / .pyc files once, unmeasured
        _time_once(code)
    for _ in range(runs):
        for name, code in VARIANTS.items():
            samples[name].append(_time_once(code))
    med = {name: median(values) * 1000 for name, values in samples.items()}
    heavy = heavy_modules_loaded()
    section = Section("cold_start")
    section.rows += [
        Row("cold_start", f"import function_app (median of {runs})", med["function_app"], med["azure.functions"],
            "ms", "import azure.functions", f"ratio <= {TARGET_RATIO}",
            med["function_app"] / med["azure.functions"] <= TARGET_RATIO),
        Row("cold_start", "naive: all SDKs eager + function_app", med["naive eager"], med["azure.functions"], "ms",
            "import azure.functions"),
        Row("cold_start", "naive eager vs ours", med["naive eager"], med["function_app"], "ms", "import function_app"),
        Row("cold_start", "heavy SDK modules after import", float(len(heavy)), None, "", "", "== 0", not heavy),
    ]
    interp = med["interpreter"]
    above_base, above_ours = med["azure.functions"] - interp, med["function_app"] - interp
    section.notes.append(f"bare interpreter start {interp:.1f} ms; import cost above it: azure.functions "
                         f"{above_base:.1f} ms, function_app {above_ours:.1f} ms "
                         f"({above_ours / above_base:.2f}x), naive {med['naive eager'] - interp:.1f} ms")
    section.notes.append("heavy modules loaded by function_app: " + (", ".join(heavy) if heavy else "none"))
    total, extra = extra_imports()
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
