"""Group commit of small transactions: calls made while one runs go together in the
next run, a lone call waits for nothing, and one call's failure stays its own."""

from __future__ import annotations

import asyncio

import pytest

from spikefleet_server.storage.groups import Grouped


class Recorder:
    """A run that records the groups it was given and fails on the item "bad"."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.release = asyncio.Event()

    async def run(self, items: list[str]) -> list[str]:
        self.groups.append(list(items))
        if len(self.groups) == 1:
            await self.release.wait()  # the first run holds: others queue meanwhile
        if "bad" in items:
            raise ValueError("bad item")
        return [item.upper() for item in items]


def grouped(recorder: Recorder, max_group: int = 3) -> Grouped[str, str]:
    return Grouped(recorder.run, key=lambda item: item.split(":")[0], max_group=max_group)


def test_a_lone_call_runs_at_once_and_calls_made_meanwhile_share_the_next_runs() -> None:
    async def scenario() -> tuple[list[str], list[list[str]]]:
        recorder = Recorder()
        calls = grouped(recorder)
        first = asyncio.ensure_future(calls("a"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert recorder.groups == [["a"]]  # ran alone, without waiting for company
        rest = [asyncio.ensure_future(calls(item)) for item in "bcdef"]
        await asyncio.sleep(0)
        recorder.release.set()
        return await asyncio.gather(first, *rest), recorder.groups

    results, groups = asyncio.run(scenario())
    assert results == ["A", "B", "C", "D", "E", "F"]
    assert groups == [["a"], ["b", "c", "d"], ["e", "f"]]  # in order, at most max_group


def test_two_calls_of_one_key_never_share_a_run_and_keep_their_order() -> None:
    async def scenario() -> tuple[list[str], list[list[str]]]:
        recorder = Recorder()
        recorder.release.set()
        calls = grouped(recorder, max_group=10)
        results = await asyncio.gather(*(calls(i) for i in ("x:1", "y:1", "x:2", "x:3", "z:1")))
        return results, recorder.groups

    results, groups = asyncio.run(scenario())
    assert results == ["X:1", "Y:1", "X:2", "X:3", "Z:1"]
    assert groups == [["x:1", "y:1", "z:1"], ["x:2"], ["x:3"]]


def test_when_a_group_fails_each_call_runs_alone_and_only_the_culprit_fails() -> None:
    async def scenario() -> tuple[list[object], list[list[str]]]:
        recorder = Recorder()
        recorder.release.set()
        calls = grouped(recorder)
        results = await asyncio.gather(
            *(calls(i) for i in ("a", "bad", "c")), return_exceptions=True
        )
        return results, recorder.groups

    results, groups = asyncio.run(scenario())
    assert results[0] == "A" and results[2] == "C"
    assert isinstance(results[1], ValueError)
    assert groups == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]


def test_a_call_cancelled_before_its_run_is_left_out() -> None:
    async def scenario() -> list[list[str]]:
        recorder = Recorder()
        calls = grouped(recorder)
        first = asyncio.ensure_future(calls("a"))
        await asyncio.sleep(0)
        gone = asyncio.ensure_future(calls("b"))
        kept = asyncio.ensure_future(calls("c"))
        await asyncio.sleep(0)
        gone.cancel()
        recorder.release.set()
        assert await first == "A" and await kept == "C"
        with pytest.raises(asyncio.CancelledError):
            await gone
        return recorder.groups

    assert asyncio.run(scenario()) == [["a"], ["c"]]
