"""Soak-lite: a small bench.soak run in `make test` (300 ids, 10 % Twilio 429/500, 5 % answered after the client's
timeout, 5 % duplicated queue messages, one SIGKILL + restart of the stand-in host process). Asserts only what must
always hold: every id was sent exactly once or dead-lettered with a reason: 0 lost, 0 double sends, and with Twilio
readable no send left ambiguous. Never a timing."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]


def test_soak_lite_loses_nothing_and_sends_nothing_twice():
    from bench import soak

    args = soak.parse_args(["--count", "300", "--kills", "1", "--fault-rate", "0.10", "--timeout-rate", "0.05",
                            "--dup-rate", "0.05", "--timeout", "150"])
    tally = soak.run(args)
    report = tally.render(vars(args))
    assert tally.settled, report
    assert tally.lost == 0, report
    assert tally.double_sends == 0, report
    assert tally.ambiguous == 0, report
    assert "double sends: 0\nlost: 0\nambiguous: 0" in report
    assert tally.kills == 1, report
    # Every id is accounted for: sent, or dead-lettered with a reason.
    accounted = tally.sent_once + sum(tally.sent_once_but_dead_lettered.values()) + sum(tally.dead_lettered.values())
    assert accounted == tally.enqueued_ids, report
    assert "moved_by_host_without_reason" not in "".join(tally.dead_lettered), report
