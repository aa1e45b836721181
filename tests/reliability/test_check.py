"""The final check itself: it must see a reading under the wrong id, a lost one, a phantom."""

from __future__ import annotations

from typing import Any

import pytest

from tests.reliability.pipeline import Delivery, check_identity

STREAM = "s1"
COMMITTED = {1: ("id-1", 1.0), 2: ("id-2", 2.0), 3: ("id-3", 3.0)}


def at_collector(*rows: tuple[int, str, float]) -> list[dict[str, Any]]:
    return [{"seq": seq, "id": rid, "message": {"value": value}} for seq, rid, value in rows]


def checked(readings: list[dict[str, Any]], dropped: set[int] | None = None) -> Delivery:
    delivery = Delivery(STREAM, 3, len(readings), [], 0, 0, 0)
    check_identity(delivery, STREAM, COMMITTED, dropped or set(), readings)
    return delivery


def test_every_reading_under_its_seq_and_id_passes() -> None:
    delivery = checked(at_collector((1, "id-1", 1), (2, "id-2", 2), (3, "id-3", 3)))
    assert (delivery.ledger_lost, delivery.wrong, delivery.unknown) == ([], [], [])
    assert delivery.ledger == 3


def test_a_phantom_in_place_of_a_committed_reading_is_caught() -> None:
    # the seq range is complete, so a seq-only check would pass: the id gives it away
    delivery = checked(at_collector((1, "id-1", 1), (2, "phantom", 2), (3, "id-3", 3)))
    assert delivery.wrong == [
        f"{STREAM}/2: committed id-2 value 2, collector holds phantom value 2"
    ]


def test_a_value_under_the_wrong_seq_is_caught() -> None:
    delivery = checked(at_collector((1, "id-1", 1), (2, "id-2", 3), (3, "id-3", 3)))
    assert len(delivery.wrong) == 1


def test_a_missing_reading_is_lost_unless_dropped_at_the_cap() -> None:
    assert checked(at_collector((1, "id-1", 1), (3, "id-3", 3))).ledger_lost == [
        f"{STREAM}/2 value 2"
    ]
    assert checked(at_collector((1, "id-1", 1), (3, "id-3", 3)), dropped={2}).ledger_lost == []


def test_a_reading_never_committed_is_caught() -> None:
    delivery = checked(at_collector((1, "id-1", 1), (2, "id-2", 2), (3, "id-3", 3), (4, "x", 4)))
    assert delivery.unknown == [f"{STREAM}/4"]


def test_a_value_committed_twice_fails_the_check() -> None:
    delivery = Delivery(STREAM, 2, 0, [], 0, 0, 0)
    with pytest.raises(AssertionError, match="more than once"):
        check_identity(delivery, STREAM, {1: ("a", 1.0), 2: ("b", 1.0)}, set(), [])
