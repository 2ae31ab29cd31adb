"""The single-listing batcher: a batch is what queued while the last one ran, and no caller is lost."""

from __future__ import annotations

import asyncio

import pytest

from serve_app.batching import DrainBatcher


class GatedCompute:
    """A computation that records each batch and, while ``gate`` is clear, holds it (as TreeSHAP would)."""

    def __init__(self, fail_on=None):
        self.batches: list[list] = []
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.fail_on = fail_on

    async def __call__(self, items: list) -> list:
        self.batches.append(list(items))
        self.started.set()
        await self.gate.wait()
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"cannot compute {self.fail_on}")
        return [item * 10 for item in items]


async def running_first(batcher: DrainBatcher, compute: GatedCompute, item) -> asyncio.Task:
    """A call whose batch is computing, held at the gate: callers from now on queue behind it."""
    task = asyncio.create_task(batcher(item))
    await compute.started.wait()
    return task


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_lone_call_is_computed_at_once_as_a_batch_of_one():
    async def scenario():
        compute = GatedCompute()
        compute.gate.set()
        batcher = DrainBatcher(compute, max_batch_size=16)
        return await asyncio.wait_for(batcher(7), timeout=2), compute.batches

    assert asyncio.run(scenario()) == (70, [[7]])


def test_calls_that_queue_while_a_batch_computes_make_up_the_next_batch():
    """Serve's @serve.batch would have made five batches of one here; the drainer makes one of five."""

    async def scenario():
        compute = GatedCompute()
        batcher = DrainBatcher(compute, max_batch_size=16)
        first = await running_first(batcher, compute, 1)
        rest = [asyncio.create_task(batcher(i)) for i in range(2, 7)]
        await _settle()
        compute.gate.set()
        return await asyncio.wait_for(asyncio.gather(first, *rest), timeout=2), compute.batches

    results, batches = asyncio.run(scenario())
    assert results == [10, 20, 30, 40, 50, 60]
    assert batches == [[1], [2, 3, 4, 5, 6]]


def test_max_batch_size_caps_each_batch_and_can_change_between_batches():
    async def scenario():
        compute = GatedCompute()
        batcher = DrainBatcher(compute, max_batch_size=2)
        first = await running_first(batcher, compute, 0)
        rest = [asyncio.create_task(batcher(i)) for i in range(1, 6)]
        await _settle()
        batcher.set_max_batch_size(3)
        compute.gate.set()
        await asyncio.wait_for(asyncio.gather(first, *rest), timeout=2)
        return compute.batches

    assert asyncio.run(scenario()) == [[0], [1, 2, 3], [4, 5]]
    with pytest.raises(ValueError, match="max_batch_size must be at least 1, got 0"):
        DrainBatcher(GatedCompute(), max_batch_size=0)


def test_a_failing_batch_fails_its_own_callers_only():
    async def scenario():
        compute = GatedCompute(fail_on=3)
        batcher = DrainBatcher(compute, max_batch_size=2)
        first = await running_first(batcher, compute, 1)
        failing = [asyncio.create_task(batcher(i)) for i in (2, 3)]
        after = asyncio.create_task(batcher(4))
        await _settle()
        compute.gate.set()
        return await asyncio.wait_for(asyncio.gather(first, *failing, after, return_exceptions=True), timeout=2)

    first, two, three, four = asyncio.run(scenario())
    assert (first, four) == (10, 40)
    for failed in (two, three):
        assert isinstance(failed, ValueError) and str(failed) == "cannot compute 3"


def test_a_computation_that_loses_results_is_an_error_for_its_callers():
    async def short(items):
        return items[:-1]

    async def scenario():
        batcher = DrainBatcher(short, max_batch_size=4)
        return await asyncio.gather(batcher(1), batcher(2), return_exceptions=True)

    for result in asyncio.run(scenario()):
        assert isinstance(result, RuntimeError) and str(result) == "a batch of 2 items gave 1 results"


def test_a_caller_that_gives_up_before_its_batch_is_left_out_and_the_others_are_answered():
    async def scenario():
        compute = GatedCompute()
        batcher = DrainBatcher(compute, max_batch_size=16)
        first = await running_first(batcher, compute, 1)
        gone, stays = asyncio.create_task(batcher(2)), asyncio.create_task(batcher(3))
        await _settle()
        gone.cancel()
        await _settle()
        compute.gate.set()
        return await asyncio.wait_for(asyncio.gather(first, stays), timeout=2), gone.cancelled(), compute.batches

    results, cancelled, batches = asyncio.run(scenario())
    assert results == [10, 30] and cancelled
    assert batches == [[1], [3]]


def test_batch_sizes_are_reported_and_a_stopped_drainer_leaves_nobody_waiting():
    async def scenario():
        sizes = []
        compute = GatedCompute()
        batcher = DrainBatcher(compute, max_batch_size=16, on_batch=sizes.append)
        first = await running_first(batcher, compute, 1)
        queued = asyncio.create_task(batcher(2))
        await _settle()
        batcher._drainer.cancel()  # what stopping the replica's event loop does to it
        outcomes = await asyncio.wait_for(asyncio.gather(first, queued, return_exceptions=True), timeout=2)
        compute.gate.set()
        answered_after = await asyncio.wait_for(batcher(3), timeout=2)  # a new drainer starts
        return sizes, outcomes, answered_after

    sizes, outcomes, answered_after = asyncio.run(scenario())
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)
    assert answered_after == 30
    assert sizes == [1, 1]
