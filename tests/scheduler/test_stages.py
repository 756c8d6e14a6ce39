"""The stage runner's policy: one outcome per row; out of memory halves the group; any other error runs the
rows one by one, once; a row that fails alone fails alone; rows whose callers left are not run again."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sdxl_bedrock.errors import InvalidRequest
from sdxl_bedrock.scheduler.stages import Stage, StageRunner


class OutOfMemoryError(RuntimeError):
    """torch.OutOfMemoryError's name, without torch."""


class Recorder:
    def __init__(self, fail: Callable[[list[int]], BaseException | None]) -> None:
        self.fail = fail
        self.calls: list[list[int]] = []
        self.done: list[int] = []
        self.failed: dict[int, BaseException] = {}
        self.halved: list[int] = []
        self.retries: list[str] = []

    def call(self, rows: Sequence[int]) -> None:
        self.calls.append(list(rows))
        error = self.fail(list(rows))
        if error is not None:
            raise error
        self.done.extend(rows)

    def runner(self, skip: Callable[[int], bool] = lambda _: False) -> StageRunner[int]:
        return StageRunner(
            lambda _stage, row, error: self.failed.__setitem__(row, error),
            skip=skip,
            on_out_of_memory=lambda _stage, rows: self.halved.append(rows),
            on_retry=lambda _stage, reason: self.retries.append(reason),
        )

    def outcomes(self, rows: Sequence[int]) -> None:
        assert sorted([*self.done, *self.failed]) == sorted(rows), "every row exactly one outcome"


def test_out_of_memory_halves_the_group_down_to_what_fits() -> None:
    recorder = Recorder(lambda rows: OutOfMemoryError("CUDA out of memory") if len(rows) > 2 else None)
    recorder.runner().run(Stage.FINISH, range(8), recorder.call)
    recorder.outcomes(range(8))
    assert recorder.failed == {}
    assert recorder.calls == [[*range(8)], [0, 1, 2, 3], [0, 1], [2, 3], [4, 5, 6, 7], [4, 5], [6, 7]]
    assert recorder.halved == [8, 4, 4]


def test_a_row_that_runs_out_of_memory_alone_runs_once_more_then_fails_alone() -> None:
    recorder = Recorder(lambda rows: OutOfMemoryError("CUDA out of memory") if 3 in rows else None)
    recorder.runner().run(Stage.TICK, range(4), recorder.call)
    recorder.outcomes(range(4))
    assert list(recorder.failed) == [3]
    assert recorder.calls.count([3]) == 2


def test_a_transient_out_of_memory_error_costs_nothing_but_a_retry() -> None:
    errors = iter([OutOfMemoryError("once")])
    recorder = Recorder(lambda rows: next(errors, None))
    recorder.runner().run(Stage.JOIN, [5], recorder.call)
    assert recorder.done == [5] and recorder.retries == ["out_of_memory"]


def test_any_other_error_runs_the_rows_one_by_one_once_and_only_the_culprit_fails() -> None:
    recorder = Recorder(lambda rows: RuntimeError("bad") if 2 in rows else None)
    recorder.runner().run(Stage.TICK, range(4), recorder.call)
    recorder.outcomes(range(4))
    assert list(recorder.failed) == [2]
    assert recorder.calls == [[0, 1, 2, 3], [0], [1], [2], [3]], "each row once, alone"
    assert recorder.retries == ["error"]


def test_a_client_error_keeps_its_type_for_the_wire() -> None:
    refused = InvalidRequest("an init image resized in latent space takes no mask")
    recorder = Recorder(lambda rows: refused if 1 in rows else None)
    recorder.runner().run(Stage.JOIN, range(3), recorder.call)
    assert recorder.failed == {1: refused}


def test_rows_whose_callers_left_are_not_run_again() -> None:
    recorder = Recorder(lambda rows: RuntimeError("bad") if len(rows) > 1 else None)
    recorder.runner(skip=lambda row: row == 1).run(Stage.TICK, range(3), recorder.call)
    assert recorder.calls == [[0, 2], [0], [2]]
