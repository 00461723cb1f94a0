"""End to end: the CLI enqueues → Azurite → stand-in host → queue function → Twilio fake → signed status
callback → stand-in HTTP host → status function → ledger."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.outbound_helpers import row
from tests.peers.ports import wait_until
from tests.twilio_signing import TEST_AUTH_TOKEN

pytestmark = pytest.mark.e2e
TO = "+14155550100"


def enqueue(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shared.enqueue", *args], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=60)


def test_cli_sms_is_sent_and_delivery_callback_lands_in_the_ledger(outbound_env: Any, standin_http: Any,
                                                                    standin_queues: Any) -> None:
    standin_queues(visibility_timeout=0)
    done = enqueue("sms", "--to", TO, "--body", "hello from the CLI", "--media-url", "https://e.com/a.png")
    assert done.returncode == 0, done.stderr
    ident = done.stdout.strip()
    wait_until(lambda: len(outbound_env.created()) == 1, 30, "the SMS to reach the Twilio fake")
    [request] = outbound_env.created()
    assert request.send_id == ident and request.form["MediaUrl"] == ["https://e.com/a.png"]
    wait_until(lambda: (r := row("sms", ident)) is not None and r.status == "sent", 10, "the ledger to say sent")
    for status in ("sent", "delivered"):
        response = outbound_env.post_status_callback(request, status, token=TEST_AUTH_TOKEN,
                                                     deliver_to=standin_http.base_url)
        assert response.status_code == 204
    stored = row("sms", ident)
    assert stored.status == "delivered" and stored.sid == request.sid


def test_cli_call_is_placed_and_completed(outbound_env: Any, standin_http: Any, standin_queues: Any) -> None:
    standin_queues(visibility_timeout=0)
    done = enqueue("call", "--to", TO, "--say", "Your order shipped", "--voice", "alice", "--machine-detection",
                   "--base64", "--id", "call-e2e-1")
    assert done.returncode == 0 and done.stdout.strip() == "call-e2e-1"
    wait_until(lambda: len(outbound_env.created("call")) == 1, 30, "the call to reach the Twilio fake")
    [request] = outbound_env.created("call")
    assert request.first("MachineDetection") == "Enable" and "Your order shipped" in request.first("Twiml")
    for status in ("initiated", "ringing", "in-progress", "completed"):
        assert outbound_env.post_status_callback(request, status, token=TEST_AUTH_TOKEN,
                                                 deliver_to=standin_http.base_url).status_code == 204
    assert row("call", "call-e2e-1").status == "completed"


def test_cli_send_at_is_not_sent_before_its_time(outbound_env: Any, standin_queues: Any) -> None:
    standin_queues(visibility_timeout=0)
    when = datetime.now(timezone.utc) + timedelta(seconds=3)
    done = enqueue("sms", "--to", TO, "--body", "later", "--at", when.isoformat().replace("+00:00", "Z"))
    assert done.returncode == 0, done.stderr
    wait_until(lambda: len(outbound_env.created()) == 1, 30, "the scheduled SMS to be sent")
    assert datetime.now(timezone.utc) >= when - timedelta(seconds=1)


def test_cli_rejects_bad_input_with_exit_2_and_enqueues_nothing(outbound_env: Any) -> None:
    done = enqueue("sms", "--to", "555-0100", "--body", "x")
    assert done.returncode == 2 and "to: not an E.164 number" in done.stderr and done.stdout == ""
    done = enqueue("sms", "--to", TO, "--body", "x" * 1700)
    assert done.returncode == 2 and "body: 1700 UTF-16 units > 1600" in done.stderr
    from shared import storage

    assert storage.queue(os.environ["SMS_QUEUE"]).peek_messages() == []


def test_host_moves_a_message_to_poison_only_with_a_reason(outbound_env: Any, standin_queues: Any) -> None:
    """Twilio unreachable on every try: the app dead-letters on the last try with the reason, so the host never
    has to."""
    from tests.outbound_helpers import poison, put, sms_queue, twilio_unreachable

    with twilio_unreachable():
        host = standin_queues(visibility_timeout=0)
        put(sms_queue(), {"id": "always-refused", "to": TO, "body": "x"})
        wait_until(lambda: host.stats.succeeded == 1 and host.wait_idle(), 30, "the message to settle")
    [letter] = poison(sms_queue())
    assert letter["error"]["code"] == "retries_exhausted" and "cannot connect" in letter["error"]["reason"]
    assert host.stats.moved_to_poison == 0 and host.stats.failed == host.max_dequeue_count - 1
    assert outbound_env.requests == []
