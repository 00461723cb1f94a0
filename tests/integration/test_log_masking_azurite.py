"""Under the worker's logging (root at INFO), a real opt-out written to Azurite leaves no unmasked number in any
logger's records: azure-core's per-request log is quiet, and even when an operator turns it on, the Table URLs it
logs (``RowKey='%2B1415…'``) are masked by the app's record factory. Every table call goes through the SDK, so
both hold for the send path too."""

from __future__ import annotations

import logging

from shared import optouts, storage
from tests.conftest import signed_form_request
from tests.secret_scan import LogRecorder

POLICY = "azure.core.pipeline.policies.http_logging_policy"
NUMBER = "+14155550142"


def _recording(logger_name: str = "") -> LogRecorder:
    recorder = LogRecorder()
    logging.getLogger(logger_name).addHandler(recorder)
    return recorder


def test_an_inbound_stop_logs_nothing_per_request_from_azure_core_at_info(azurite, call_function):
    recorder = _recording()
    try:
        sms = {"MessageSid": "SM" + "e" * 32, "From": NUMBER, "To": "+15005550006", "Body": "ＳＴＯＰ"}
        response, _ = call_function("sms", signed_form_request("/api/sms", sms))
    finally:
        logging.getLogger().removeHandler(recorder)
    assert response.status_code == 200 and optouts.is_opted_out(NUMBER)
    assert [name for name, _ in recorder.texts if name == POLICY] == []
    assert recorder.unmasked_numbers() == []


def test_table_request_urls_logged_by_azure_core_are_masked(azurite):
    policy = logging.getLogger(POLICY)
    quiet_level = policy.level
    policy.setLevel(logging.INFO)  # an operator turns it back on
    recorder = _recording()
    try:
        # Every table call (point operations, queries, the ops CLI) is the SDK's: its logged URLs must be masked.
        table = storage.table(optouts.TABLE)
        key, partition = NUMBER, optouts.partition_key(NUMBER)
        table.upsert_entity({"PartitionKey": partition, "RowKey": key, "Keyword": "STOP"})
        assert table.get_entity(partition, key)["Keyword"] == "STOP"
        list(table.query_entities("RowKey eq @key", parameters={"key": key}))
        table.delete_entity(partition, key)
    finally:
        logging.getLogger().removeHandler(recorder)
        policy.setLevel(quiet_level)
    urls = [text for name, text in recorder.texts if name == POLICY and "optouts(" in text]
    assert urls, "azure-core logged no Table request URL: the masking was not exercised"
    assert any("%2B1415***0142" in text for text in urls)
    assert recorder.unmasked_numbers() == []
