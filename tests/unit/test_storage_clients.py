"""Which storage account and credential the app's own clients use (no network: clients are only built)."""

from __future__ import annotations

import pytest

from shared import storage


def test_development_storage_shortcut_means_azurite_on_loopback(set_env):
    set_env(AzureWebJobsStorage="UseDevelopmentStorage=true")
    assert storage._service("table").url.startswith("http://127.0.0.1:10002/devstoreaccount1")
    assert storage._service("queue").url.startswith("http://127.0.0.1:10001/devstoreaccount1")


def test_identity_based_settings_use_the_service_uris_and_the_user_assigned_identity(monkeypatch, set_env):
    from azure.identity import ManagedIdentityCredential

    monkeypatch.delenv("AzureWebJobsStorage")
    monkeypatch.setenv("AzureWebJobsStorage__tableServiceUri", "https://acct.table.core.windows.net")
    monkeypatch.setenv("AzureWebJobsStorage__queueServiceUri", "https://acct.queue.core.windows.net")
    monkeypatch.setenv("AzureWebJobsStorage__clientId", "11111111-2222-3333-4444-555555555555")
    set_env()
    table, queue = storage._service("table"), storage._service("queue")
    assert table.url.startswith("https://acct.table.core.windows.net")
    assert queue.url.startswith("https://acct.queue.core.windows.net")
    assert isinstance(table.credential, ManagedIdentityCredential)


def test_account_name_alone_is_enough(monkeypatch, set_env):
    monkeypatch.delenv("AzureWebJobsStorage")
    monkeypatch.setenv("AzureWebJobsStorage__accountName", "acct")
    monkeypatch.setenv("AzureWebJobsStorage__clientId", "11111111-2222-3333-4444-555555555555")
    set_env()
    assert storage._service("queue").url.startswith("https://acct.queue.core.windows.net")


def test_no_storage_setting_at_all_names_the_setting(monkeypatch, set_env):
    from shared.config import MissingSettingError

    monkeypatch.delenv("AzureWebJobsStorage")
    set_env()
    with pytest.raises(MissingSettingError, match="AzureWebJobsStorage"):
        storage._service("table")


def test_storage_reachable_against_azurite(azurite):
    assert storage.storage_reachable() is True
