"""The soak's exactly-once scenarios (bench/soak_scenarios.py), small, through the local host: confusable SMS and
call pairs, identical sends both late, 5xx after a create, and a list lagging past the settle window. Counts
come from the Twilio fake's creates. Figures: ``.venv/bin/python -m bench.soak_scenarios --pairs 20``.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench import soak_scenarios

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.parametrize("scenario", soak_scenarios.SCENARIOS, ids=[s.name for s in soak_scenarios.SCENARIOS])
def test_scenario_ends_with_no_double_send_no_loss_no_ambiguity_and_every_forced_double_flagged(
        scenario: Any, azurite_peer: Any, indexed_functions: dict[str, Any]) -> None:
    result = soak_scenarios.run_scenario(scenario, 3, azurite_peer, functions=list(indexed_functions.values()))
    print(result.line())
    assert result.settled, result.line()
    assert result.lost == 0 and result.ambiguous == 0, result.line()
    if scenario.forced_doubles:
        assert result.double >= 1 and result.flagged == result.double, result.line()
    else:
        assert result.double == 0, result.line()
