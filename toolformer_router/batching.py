"""`RequestBatcher`: concurrent async requests collected into batches and served by one background thread."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Request = TypeVar("Request")


@dataclass
class _Job(Generic[Request]):
    request: Request
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class RequestBatcher(Generic[Request]):
    """Collects the requests submitted within `wait_s` of each other (at most `max_batch_size`) and serves them
    with one `serve(requests) -> results` call on a background thread. A batch that raises is served again one
    request at a time, so one bad request fails alone. A request whose caller cancelled before its batch was
    served is not served; one cancelled while served has its result dropped."""

    def __init__(self, serve: Callable[[list[Request]], Sequence[Any]], *, max_batch_size: int, wait_s: float):
        self.serve, self.max_batch_size, self.wait_s = serve, max_batch_size, wait_s
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()

    async def submit(self, request: Request) -> Any:
        """The result of `request`, served in a batch with the others submitted meanwhile."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="toolformer-router-batcher", daemon=True)
                self._worker.start()
        self._jobs.put(_Job(request, future, loop))
        return await future

    def close(self) -> None:
        """Stop the background thread (a later `submit` starts a new one)."""
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            self._jobs.put(None)
            worker.join(timeout=10)

    def _next_batch(self) -> list[_Job] | None:
        """The next jobs to serve together: the first one waiting, then those taken within `wait_s` of it (at most
        `max_batch_size`); None once closed. A job whose caller has cancelled is dropped (it is never served and
        takes no place in a batch), whether it was cancelled before it was taken or while its batch formed."""
        jobs: list[_Job] = []
        deadline = 0.0
        while len(jobs) < self.max_batch_size:
            try:
                job = self._jobs.get(timeout=max(0.0, deadline - time.perf_counter()) if jobs else None)
            except queue.Empty:
                break
            if job is None:  # closed: serve the jobs taken, then stop
                if not jobs:
                    return None
                self._jobs.put(None)
                break
            if job.future.cancelled():
                continue
            if not jobs:
                deadline = time.perf_counter() + self.wait_s
            jobs.append(job)
        return [j for j in jobs if not j.future.cancelled()]

    def _run(self) -> None:
        while (jobs := self._next_batch()) is not None:
            if not jobs:
                continue
            try:
                results: list[Any] = list(self.serve([j.request for j in jobs]))
            except Exception:  # one bad request must not fail the others: serve them one by one
                results = []
                for j in jobs:
                    try:
                        results.append(self.serve([j.request])[0])
                    except Exception as error:  # delivered to that request's awaiting task
                        results.append(error)
            for j, result in zip(jobs, results):
                try:
                    j.loop.call_soon_threadsafe(_deliver, j.future, result)
                except RuntimeError:  # the caller's event loop has closed: nobody waits for this result
                    pass


def _deliver(future: asyncio.Future, result: Any) -> None:
    if future.done():  # cancelled while it was being served
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
