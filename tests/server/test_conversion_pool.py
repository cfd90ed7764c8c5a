"""ConversionPool: progress keeps flowing after the pool's workers are killed.

A worker killed mid-write (a conversion past its time limit) leaves the progress
queue's writer lock held for good. The pool then starts its next workers with a
new queue; with one queue for the pool's life, every later conversion's progress
was silently lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

from support.server import FC_ARCH, fc_model

from spikefleet_server.conversion import ConversionJob, ConversionOutcome, ConversionPool


def convert_once(pool: ConversionPool, job: ConversionJob) -> tuple[list[str], ConversionOutcome]:
    async def run() -> tuple[list[str], ConversionOutcome]:
        steps: list[str] = []
        async for event in pool.run(job):
            if isinstance(event, ConversionOutcome):
                return steps, event
            steps.append(event[0])
        raise AssertionError("the pool ended without an outcome")

    return asyncio.run(run())


def test_progress_is_reported_again_after_a_killed_workers_queue_is_wedged(tmp_path: Path):
    job = ConversionJob(path=str(fc_model(tmp_path / "fc.safetensors")), name="fc", arch=FC_ARCH)
    pool = ConversionPool(1)
    try:
        steps, outcome = convert_once(pool, job)
        assert outcome.ok and steps, "a conversion reports its steps"

        # What a worker killed inside Queue.put leaves behind: the writer lock, held forever.
        generation = pool._generation
        assert generation is not None
        generation.events._wlock.acquire()
        pool._kill(generation.pool)  # what the time limit does

        steps_after, outcome_after = convert_once(pool, job)
        assert outcome_after.ok
        # Progress is best effort at the very end (the last step can race the outcome),
        # so at most the final one of either run may be missing; on a wedged queue all are.
        shared = min(len(steps), len(steps_after))
        assert shared >= max(len(steps), len(steps_after)) - 1 >= 2
        assert steps_after[:shared] == steps[:shared]
    finally:
        pool.shutdown()
