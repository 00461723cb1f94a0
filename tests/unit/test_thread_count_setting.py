"""PYTHON_THREADPOOL_THREAD_COUNT is read as the Python worker 4.34 reads it, by the app (its connection pools)
and by the local host (its worker pool) alike (issue 20, item 10): ``int()`` of the value, at least 1, no upper
bound; unset → min(32, cores + 4); anything else → one warning naming the setting and its value, then that
default. Before, the app sized its pools for 16 (unset, 'abc') or 1 ('0'), and the local host refused to start."""

from __future__ import annotations

import logging
import os
from typing import Callable

import pytest

from devhost.settings import worker_thread_count
from devhost.worker import WorkerPool
from shared import config, transport

WORKER_DEFAULT = min(32, (os.cpu_count() or 1) + 4)


def _warnings_naming(caplog: pytest.LogCaptureFixture, value: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
            and "PYTHON_THREADPOOL_THREAD_COUNT" in r.getMessage() and repr(value) in r.getMessage()]


def test_unset_thread_count_is_the_workers_default_for_app_pools_and_local_host(
        monkeypatch: pytest.MonkeyPatch, set_env: Callable[..., None], caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("PYTHON_THREADPOOL_THREAD_COUNT", raising=False)
    set_env()
    assert config.get_settings().thread_count == transport.pool_size() == WORKER_DEFAULT
    assert worker_thread_count() == WORKER_DEFAULT
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("value", ["abc", "0", "-3", "8.0", "", "16 threads"])
def test_invalid_thread_count_warns_naming_it_and_uses_the_workers_default_in_app_and_local_host(
        value: str, set_env: Callable[..., None], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    set_env(PYTHON_THREADPOOL_THREAD_COUNT=value)
    assert config.get_settings().thread_count == WORKER_DEFAULT
    assert transport.pool_size() == WORKER_DEFAULT
    assert len(_warnings_naming(caplog, value)) == 1, caplog.text  # settings are read once per process
    caplog.clear()
    pool = WorkerPool()  # the local host keeps running, as the worker does
    try:
        assert pool.threads == WORKER_DEFAULT
    finally:
        pool.shutdown()
    assert len(_warnings_naming(caplog, value)) == 1, caplog.text


def test_huge_thread_count_is_the_workers_but_connection_pools_stay_bounded(
        set_env: Callable[..., None], caplog: pytest.LogCaptureFixture) -> None:
    set_env(PYTHON_THREADPOOL_THREAD_COUNT=f" {10**10} ")  # the worker has no upper bound (int() allows spaces)
    assert config.get_settings().thread_count == worker_thread_count() == 10**10
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert transport.pool_size() == transport.MAX_POOLED_CONNECTIONS
    session = transport.new_session()
    try:  # urllib3 pre-fills one queue slot per pooled connection: 10**10 would exhaust memory
        assert session.get_adapter("https://").poolmanager.connection_pool_kw["maxsize"] <= 1024
    finally:
        session.close()
