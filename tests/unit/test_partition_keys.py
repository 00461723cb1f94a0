"""The ledger and opt-out keys spread rows evenly over their partitions, stably, and never onto another layout's.

Bound, stated: 100,000 keys over 256 partitions is ~390 per partition, with a binomial standard deviation of
~19.7 (5%). A uniform hash keeps every partition within 30% of the mean (6 sigma) and the spread's standard
deviation within 1.25x the binomial one; a bad key function (Python's salted hash, a prefix, a counter) fails.
"""

from __future__ import annotations

import math
import statistics
import uuid
from collections import Counter
from typing import Callable

import pytest

from shared import ledger, optouts

KEYS = 100_000


def _spread(keys: Callable[[int], str]) -> Counter[str]:
    return Counter(keys(i) for i in range(KEYS))


def _assert_even(counts: Counter[str], partitions: int) -> None:
    mean = KEYS / partitions
    binomial_sigma = math.sqrt(KEYS * (1 / partitions) * (1 - 1 / partitions))
    assert len(counts) == partitions
    assert max(counts.values()) <= 1.3 * mean and min(counts.values()) >= 0.7 * mean
    assert statistics.pstdev(counts.values()) <= 1.25 * binomial_sigma


@pytest.mark.parametrize("kind", ["sms", "call"])
@pytest.mark.parametrize("make_id", [lambda i: f"order-{i}", lambda i: str(uuid.UUID(int=i * 7919 + 13)),
                                     lambda i: f"{i:020d}"], ids=["counter", "uuid", "padded"])
def test_100k_send_ids_spread_evenly_over_256_partitions(kind: str, make_id: Callable[[int], str]) -> None:
    _assert_even(_spread(lambda i: ledger.partition_key(kind, make_id(i))), ledger.PARTITIONS)


@pytest.mark.parametrize("make_address", [lambda i: f"+1415{i:07d}", lambda i: f"whatsapp:+4477{i:08d}"],
                         ids=["e164", "whatsapp"])
def test_100k_opt_out_addresses_spread_evenly_over_256_partitions(make_address: Callable[[int], str]) -> None:
    _assert_even(_spread(lambda i: optouts.partition_key(make_address(i))), optouts.PARTITIONS)


def test_send_partitions_never_collide_with_the_sid_index_or_the_legacy_layout() -> None:
    keys = {ledger.partition_key(kind, f"id-{i}") for kind in ledger.KINDS for i in range(20_000)}
    assert not any(key.startswith(ledger.SID_INDEX_PREFIX) for key in keys)
    assert keys.isdisjoint({"sms", "call", "optout"})
    assert all(ledger.is_send_entity({"PartitionKey": key}) for key in keys)
    opt_keys = {optouts.partition_key(f"+1415{i:07d}") for i in range(20_000)}
    assert optouts.LEGACY_PARTITION not in opt_keys and opt_keys.isdisjoint(keys)


def test_the_same_id_gets_another_partition_per_kind_and_keys_are_fixed_across_processes() -> None:
    # Fixed values: a key function that changed (or used Python's per-process salted hash) would strand rows.
    assert ledger.partition_key("sms", "order-1234") == "sms-a8"
    assert optouts.partition_key("+14155552345") == "optout-0f"
    assert ledger.partition_key("call", "order-1234").startswith("call-")
