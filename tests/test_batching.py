"""`RequestBatcher`: requests whose caller has cancelled are never served."""

from __future__ import annotations

import asyncio
import time

from toolformer_router.batching import RequestBatcher


def recording_batcher(serve_s: float, **kwargs) -> tuple[RequestBatcher, list[list[int]]]:
    """A batcher that answers n with 10·n, `serve_s` per batch, recording each batch it serves."""
    batches: list[list[int]] = []

    def serve(requests: list[int]) -> list[int]:
        batches.append(requests)
        time.sleep(serve_s)
        return [10 * n for n in requests]

    return RequestBatcher(serve, **kwargs), batches


async def test_requests_cancelled_while_queued_are_not_served_and_take_no_place_in_a_batch():
    batcher, batches = recording_batcher(0.2, max_batch_size=3, wait_s=0.05)
    try:
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.1)  # 1 is being served
        abandoned = [asyncio.create_task(batcher.submit(n)) for n in (2, 3)]
        live = [asyncio.create_task(batcher.submit(n)) for n in (4, 5)]
        await asyncio.sleep(0)  # all four queued
        for task in abandoned:
            task.cancel()
        assert await asyncio.gather(first, *live) == [10, 40, 50]
    finally:
        batcher.close()
    assert batches == [[1], [4, 5]]


async def test_a_request_cancelled_while_its_batch_forms_is_not_served():
    batcher, batches = recording_batcher(0.0, max_batch_size=4, wait_s=0.3)
    try:
        cancelled = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.05)  # taken: its batch waits for more until 0.3 s
        cancelled.cancel()
        assert await batcher.submit(2) == 20
    finally:
        batcher.close()
    assert batches == [[2]]
