"""ByteBudget: the sum of what holders keep stays under the limit, oldest evicted first."""
from __future__ import annotations

from sensor.budget import ByteBudget


def test_charges_add_up_and_release_gives_back():
    budget = ByteBudget(100)
    assert budget.charge("a", 40, lambda h: None) == 0
    assert budget.charge("a", 20, lambda h: None) == 0
    assert budget.charge("b", 30, lambda h: None) == 0
    assert budget.used == 90
    budget.release("a")
    assert budget.used == 30
    budget.release("a")          # twice is harmless
    assert budget.used == 30 and budget.peak == 90


def test_over_the_limit_evicts_the_oldest_other_holders_until_it_fits():
    budget, evicted = ByteBudget(100), []
    for holder in "abcd":
        budget.charge(holder, 25, evicted.append)
    assert budget.charge("e", 60, evicted.append) == 3
    assert evicted == ["a", "b", "c"] and budget.used == 85 and budget.evictions == 3


def test_the_holder_being_charged_is_evicted_last():
    budget, evicted = ByteBudget(100), []
    budget.charge("old", 50, evicted.append)
    budget.charge("young", 10, evicted.append)
    budget.charge("old", 60, evicted.append)    # old grows: young goes, old stays
    assert evicted == ["young"] and budget.used == 110   # alone over the limit: its own cap applies
