"""Fixtures of the integration tests (the session-wide peers are in tests/conftest.py)."""

from __future__ import annotations

import threading
from typing import Iterator

import pytest

from tests.conftest import reset_app_state
from tests.peers.connect_proxy import ConnectProxy


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ConnectProxy]:
    server = ConnectProxy()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy",
                 "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", server.url)
    reset_app_state()
    yield server
    server.shutdown()
    server.server_close()
