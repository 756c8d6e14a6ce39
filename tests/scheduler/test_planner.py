"""The tick planner: the oldest size first, and the row count that measured cheapest per row."""

from __future__ import annotations

from dataclasses import dataclass

from sdxl_bedrock.scheduler.planner import GROW_EVERY, REFRESH_EVERY, SizeCosts, TickPlanner


@dataclass(eq=False)
class Row:
    pixel_size: tuple[int, int] = (64, 64)
    unet_rows: int = 2
    checkpoint: str = ""


def rows(count: int, size: tuple[int, int] = (64, 64), unet_rows: int = 2) -> list[Row]:
    return [Row(size, unet_rows) for _ in range(count)]


def settle(planner: TickPlanner, candidates: list[Row], seconds: dict[int, float]) -> list[Row]:
    """Let the planner try counts until it stops exploring, with `seconds` as each UNet row count's cost."""
    for _ in range(10):
        chosen = planner.choose(candidates)
        unet_rows = sum(row.unet_rows for row in chosen)
        planner.record(candidates[0].pixel_size, unet_rows, seconds[unet_rows])
    return planner.choose(candidates)


def test_untried_counts_are_tried_largest_first() -> None:
    planner = TickPlanner(max_rows=8)
    candidates = rows(8)
    tried = []
    for _ in range(4):
        chosen = planner.choose(candidates)
        tried.append(len(chosen))
        planner.record((64, 64), 2 * len(chosen), 1.0)
    assert tried == [8, 4, 2, 1]


def test_where_batching_pays_a_tick_takes_every_row() -> None:
    # A GPU: a UNet call of 16 rows costs little more than one of 2.
    cost = {2 * k: 0.1 + 0.01 * k for k in range(1, 9)}
    assert len(settle(TickPlanner(max_rows=8), rows(8), cost)) == 8


def test_where_batching_costs_more_per_row_a_tick_takes_one() -> None:
    # A CPU at 1024x1024: 8 rows cost more than 8 times one.
    cost = {2 * k: 1.0 * k**1.2 for k in range(1, 9)}
    assert len(settle(TickPlanner(max_rows=8), rows(8), cost)) == 1


def test_the_best_count_may_lie_in_between() -> None:
    cost = {2: 1.0, 4: 1.2, 8: 2.0, 16: 8.0}  # rows per second: 1, 1.7, 2, 1
    assert len(settle(TickPlanner(max_rows=8), rows(8), cost)) == 4


def test_ticks_serve_the_oldest_rows_size_oldest_first() -> None:
    planner = TickPlanner(max_rows=8)
    older, other, younger = Row((64, 64)), Row((128, 64)), Row((64, 64))
    assert planner.choose([older, other, younger]) == [older, younger]


def test_a_tick_never_takes_more_than_max_rows_or_the_memory_cap() -> None:
    planner = TickPlanner(max_rows=4)
    assert len(planner.choose(rows(6))) == 4
    planner.out_of_memory((64, 64), 4)
    assert len(planner.choose(rows(6))) <= 2
    planner.out_of_memory((64, 64), 1)
    assert len(planner.choose(rows(6))) == 1


def test_a_cap_grows_back_one_row_per_run_of_successful_ticks_and_then_goes() -> None:
    planner = TickPlanner(max_rows=4)
    planner.out_of_memory((64, 64), 4)
    assert planner.cap((64, 64)) == 2
    for _ in range(GROW_EVERY - 1):
        planner.succeeded((64, 64), 2)
    planner.succeeded((64, 64), 1)  # below the cap: says nothing about the cap
    assert planner.cap((64, 64)) == 2
    planner.succeeded((64, 64), 2)
    assert planner.cap((64, 64)) == 3
    planner.out_of_memory((64, 64), 3)
    assert planner.cap((64, 64)) == 1, "multiplicative decrease from where it stood"
    for _ in range(3 * GROW_EVERY):
        planner.succeeded((64, 64), planner.cap((64, 64)))
    assert planner.row_caps == {} and planner.cap((64, 64)) == 4


def test_the_largest_count_is_measured_again_now_and_then() -> None:
    planner = TickPlanner(max_rows=8)
    cost = {2 * k: 1.0 * k**1.2 for k in range(1, 9)}
    settle(planner, rows(8), cost)
    counts = []
    for _ in range(REFRESH_EVERY):
        chosen = planner.choose(rows(8))
        counts.append(len(chosen))
        planner.record((64, 64), 2 * len(chosen), cost[2 * len(chosen)])
    assert counts.count(8) >= 1 and counts.count(1) >= REFRESH_EVERY - 2


def test_costs_interpolate_between_measured_counts_and_extrapolate_beyond() -> None:
    costs = SizeCosts()
    costs.record(2, 1.0)
    costs.record(8, 4.0)
    assert costs.estimate(4) == 2.0
    assert costs.estimate(16) == 8.0
    assert costs.measured_near(9) and not costs.measured_near(4)
