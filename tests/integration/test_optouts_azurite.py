"""Inbound keywords really change the optouts table in Azurite (read back with the Azure SDK)."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient

from shared import optouts
from tests.conftest import signed_form_request

SENDER = "+14155552345"


def sms(body: str, sender: str = SENDER) -> dict:
    return {"MessageSid": "SM" + "b" * 32, "From": sender, "To": "+15005550006", "Body": body}


def optout_row(azurite, number: str):
    table = TableServiceClient.from_connection_string(azurite.connection_string).get_table_client("optouts")
    try:
        return table.get_entity(partition_key=optouts.partition_key(number), row_key=number)
    except ResourceNotFoundError:
        return None


@pytest.mark.parametrize("keyword", ["STOP", "stopall", "Unsubscribe", "CANCEL", "end", "QUIT"])
def test_stop_family_records_an_opt_out_row(call_function, azurite, keyword):
    number = f"+1415555{abs(hash(keyword)) % 10000:04d}"
    response, inbound = call_function("sms", signed_form_request("/api/sms", sms(keyword, number)))
    assert response.status_code == 200
    row = optout_row(azurite, number)
    assert row is not None and row["Keyword"] == keyword.upper()
    assert '"keyword": "%s"' % keyword.upper() in inbound.get()


@pytest.mark.parametrize("keyword", ["START", "yes", "UNSTOP"])
def test_start_family_removes_the_opt_out(call_function, azurite, keyword):
    number = "+14155550199"
    call_function("sms", signed_form_request("/api/sms", sms("STOP", number)))
    assert optout_row(azurite, number) is not None
    response, _ = call_function("sms", signed_form_request("/api/sms", sms(keyword, number)))
    assert response.status_code == 200
    assert optout_row(azurite, number) is None
    assert not optouts.is_opted_out(number)


def test_start_from_a_number_that_never_opted_out_is_fine(call_function, azurite):
    response, _ = call_function("sms", signed_form_request("/api/sms", sms("START", "+14155550123")))
    assert response.status_code == 200


def test_ordinary_text_after_stop_keeps_the_opt_out(call_function, azurite):
    number = "+14155550177"
    call_function("sms", signed_form_request("/api/sms", sms("STOP", number)))
    call_function("sms", signed_form_request("/api/sms", sms("please stop texting me", number)))
    assert optouts.is_opted_out(number)


def test_sender_that_cannot_be_a_row_key_is_a_400_not_a_500(call_function, azurite):
    response, _ = call_function("sms", signed_form_request("/api/sms", sms("STOP", "+1415/555#1")))
    assert response.status_code == 400
