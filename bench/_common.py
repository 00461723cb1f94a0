"""Shared bits of the benchmarks: result rows, percentiles, the one table ``make bench`` prints.

A benchmark reports each measurement next to a baseline measured in the same run, and the ratio between them;
timings are never asserted (the machines are small and noisy). A row may carry a target (``ratio <= 1.3``,
``p99 <= 1 ms``); the table marks it ``ok`` or ``MISS``, and the module says why when it misses.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The venv's python when there is one (make bench runs it already); the current interpreter otherwise.
_VENV_PY = ROOT / ".venv" / "bin" / "python"
PYTHON = str(_VENV_PY) if _VENV_PY.exists() else sys.executable


_indexed: list | None = None


def indexed_functions() -> list:
    """``function_app.app.get_functions()``, once per process: the host indexes the app once, and azure.functions
    refuses a second ``get_functions()`` on the same app (it sees every function name twice)."""
    global _indexed
    if _indexed is None:
        import function_app

        _indexed = list(function_app.app.get_functions())
    return _indexed


def load_average() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


@dataclass
class Row:
    """One line of the table: what was measured, our number, the baseline's, and the verdict."""

    bench: str
    metric: str
    ours: float | None
    baseline: float | None = None
    unit: str = ""
    baseline_name: str = ""
    target: str = ""          # e.g. "ratio <= 1.3", "p99 <= 1 ms"; '' = informational
    ok: bool | None = None    # None = no target
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.baseline:
            return None
        return self.ours / self.baseline


@dataclass
class Section:
    """What one benchmark module returns: its rows and free-text findings (profile summaries, counts)."""

    name: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of ``values``."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def render(sections: Iterable[Section]) -> str:
    """The table: bench | metric | ours | baseline (name) | ratio | target | verdict, then each section's notes."""
    sections = list(sections)
    header = ("bench", "metric", "ours", "baseline", "vs", "ratio", "target", "verdict")
    lines: list[tuple[str, ...]] = []
    for section in sections:
        for row in section.rows:
            verdict = "" if row.ok is None else ("ok" if row.ok else "MISS")
            ratio = row.ratio
            lines.append((row.bench, row.metric, _fmt(row.ours, row.unit), _fmt(row.baseline, row.unit),
                          row.baseline_name, "-" if ratio is None else f"{ratio:.2f}x", row.target, verdict))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
           "-+-".join("-" * w for w in widths)]
    out += [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    for section in sections:
        if section.notes:
            out.append("")
            out.append(f"[{section.name}]")
            out += [f"  {note}" for note in section.notes]
    return "\n".join(out)


def quiet_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The current environment plus ``extra`` (for child processes)."""
    env = dict(os.environ)
    env.update(extra or {})
    return env


def use_app_environment(stack: ExitStack, values: dict[str, str], *, unset: Sequence[str] = ()) -> None:
    """Set ``values`` and remove ``unset`` in this process's environment (the app reads its settings there);
    ``stack`` restores every variable as it was when it closes."""
    saved = {k: os.environ.get(k) for k in [*values, *unset]}
    os.environ.update(values)
    for name in unset:
        os.environ.pop(name, None)

    def restore() -> None:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    stack.callback(restore)


HttpObserver = Callable[[str, str, str, Any, float], None]  # (host:port, method, target, body, seconds)


def observe_http(observer: HttpObserver) -> Callable[[], None]:
    """Call ``observer`` after every HTTP exchange of this process: every client (the tables and queue SDKs,
    twilio's ``TwilioHttpClient``, Key Vault, the raw sender) goes through urllib3's connection pools.
    Returns the function that stops observing."""
    from urllib3.connectionpool import HTTPConnectionPool

    original_urlopen = HTTPConnectionPool.urlopen

    def urlopen(pool: Any, method: str, url: str, body: Any = None, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original_urlopen(pool, method, url, body, *args, **kwargs)
        finally:
            observer(f"{pool.host}:{pool.port}", method, url, body, time.perf_counter() - start)

    HTTPConnectionPool.urlopen = urlopen  # type: ignore[method-assign]

    def stop() -> None:
        HTTPConnectionPool.urlopen = original_urlopen  # type: ignore[method-assign]

    return stop


class HostProcess:
    """The local host's queue half (``bench/_soak_host.py``) as a child process: an instance of its own (its own
    GIL, its own per-process pacing writers), which the soak can SIGKILL. ``options``: that script's flags."""

    def __init__(self, env: dict[str, str], outcomes: Path, log: Path, options: Sequence[str] = ()) -> None:
        self.env, self.outcomes, self.log, self.options = env, outcomes, log, list(options)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [PYTHON, "-m", "bench._soak_host", "--outcomes", str(self.outcomes), *self.options]
        stderr = open(self.log, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        stderr.close()
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if line.strip() != "ready":
            self.proc.kill()
            raise RuntimeError(f"stand-in host did not start (see {self.log})")

    def kill(self) -> int:
        assert self.proc is not None
        pid = self.proc.pid
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        return pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
