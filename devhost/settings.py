"""Settings the way ``func start`` hands them to the worker: local.settings.json ``Values`` become environment
variables, except where the environment already defines one (the environment wins, as in Core Tools)."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import MutableMapping

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HTTP_PORT = 7071
log = logging.getLogger("devhost")


class LocalSettingsError(ValueError):
    """local.settings.json exists but cannot be used (not JSON, or ``Values`` not an object)."""


def read_local_settings(folder: Path = ROOT) -> dict:
    """The parsed local.settings.json of ``folder`` ({} when there is none)."""
    path = folder / "local.settings.json"
    if not path.is_file():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise LocalSettingsError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("Values", {}), dict):
        raise LocalSettingsError(f"{path}: 'Values' must be an object")
    return document


def apply_local_settings(document: dict, environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """Copy ``Values`` into ``environ`` where not already set; returns the names skipped because they were."""
    skipped = []
    for name, value in document.get("Values", {}).items():
        if environ.get(name):
            skipped.append(name)
        elif value is not None:
            environ[name] = str(value)
    return skipped


def http_port(document: dict) -> int:
    """``Host.LocalHttpPort`` of local.settings.json, else 7071 (func's default)."""
    try:
        return int(document.get("Host", {}).get("LocalHttpPort") or DEFAULT_HTTP_PORT)
    except (TypeError, ValueError):
        return DEFAULT_HTTP_PORT


def resolve_setting(expression: str) -> str:
    """``%SETTING%`` binding expressions → the setting's value, as the host resolves them."""
    return re.sub(r"%([^%]+)%", lambda m: os.environ[m.group(1)], expression)


def worker_thread_count() -> int:
    """Threads the Python worker runs sync functions on, read as worker 4.34 reads ``PYTHON_THREADPOOL_THREAD_COUNT``
    (``shared.config.parse_thread_count``): a whole number of at least 1, no upper bound; unset → its default,
    min(32, cores + 4); anything else → a warning naming the setting and its value, then that default (the worker
    does not stop, and neither does this host)."""
    from shared.config import THREAD_COUNT, parse_thread_count

    raw = os.environ.get(THREAD_COUNT)
    count, problem = parse_thread_count(raw)
    if problem:
        log.warning("%s=%r %s (it must be a whole number of at least 1): using the worker's default, "
                    "min(32, cores + 4) = %d threads", THREAD_COUNT, str(raw)[:40], problem, count)
    return count
