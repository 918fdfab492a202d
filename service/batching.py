"""Dynamic batching on a worker thread: requests to the same endpoint with the same trailing shapes and
options are stacked into one model call (up to ``max_batch_size`` samples) and split back. Inference
never runs on the event loop.

The worker waits for more requests (at most ``max_wait_ms`` after the first one was queued) only while
others are on their way: the HTTP side counts the requests it is reading and validating
(:meth:`Batcher.arriving`), and when none are, a lone request runs at once instead of idling.

The queue is bounded (:class:`QueueFull` when full) and each request has a deadline
(:class:`RequestTimeout`); a request whose deadline passed before its batch started is skipped.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterator

import numpy as np

from service.errors import QueueFull, RequestTimeout

log = logging.getLogger("amplify.service")

BatchFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class Timing:
    """Where a request's time went: waiting for its batch (``queue_s``: from submission to the batch's
    start, the wake-up of the worker thread included), the batch's model call, and the hop back from
    the worker thread to the event loop (``resume_s``: outputs ready -> the request's coroutine runs
    again, the event loop's wake-up included)."""

    queue_s: float = 0.0
    model_s: float = 0.0
    batch_requests: int = 1
    batch_rows: int = 0
    resume_s: float = 0.0
    done_at: float = 0.0  # time.perf_counter() when the outputs were handed to the event loop


@dataclass
class _Item:
    key: Hashable
    endpoint: str
    fn: BatchFn
    inputs: dict[str, np.ndarray]
    rows: int
    batchable: bool
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.perf_counter)
    abandoned: bool = False


BatchObserver = Callable[[str, int, int, list[float], float], None]


def _deliver(fut: asyncio.Future, value: Any, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)


class Batcher:
    """A bounded queue and one worker thread that runs batches of compatible requests."""

    def __init__(self, max_batch_size: int = 16, max_wait_ms: float = 5.0, queue_size: int = 256,
                 observer: BatchObserver | None = None, name: str = "amplify-batcher"):
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self.observer = observer
        self._items: collections.deque[_Item] = collections.deque()
        self._cond = threading.Condition()
        self._stopped = False
        self._arriving = 0  # requests being read and validated, not yet submitted
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def depth(self) -> int:
        """Requests waiting (not yet in a running batch)."""
        return len(self._items)

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Count a request that is being read and validated (it will be submitted next), so a forming batch
        waits for it (up to ``max_wait_ms``); with none arriving a batch starts at once."""
        with self._cond:
            self._arriving += 1
        try:
            yield
        finally:
            with self._cond:
                self._arriving -= 1

    async def submit(self, endpoint: str, key: Hashable, fn: BatchFn, inputs: dict[str, np.ndarray], rows: int,
                     batchable: bool = True, timeout_s: float = 30.0) -> tuple[dict[str, np.ndarray], Timing]:
        """Queue ``inputs`` (arrays with ``rows`` samples first) and wait for this request's outputs.

        ``key`` groups compatible requests (endpoint, trailing shapes, options); ``batchable=False``
        runs the request alone (e.g. seeded sampling, reproducible per request).
        """
        loop = asyncio.get_running_loop()
        item = _Item(key, endpoint, fn, inputs, rows, batchable, loop.create_future(), loop)
        with self._cond:
            if self._stopped:
                raise QueueFull("the service is shutting down", None)
            if len(self._items) >= self.queue_size:
                raise QueueFull(f"the queue is full ({self.queue_size} requests waiting); retry later", None)
            self._items.append(item)
            self._cond.notify()
        try:
            outputs, timing = await asyncio.wait_for(item.future, timeout_s)
        except asyncio.TimeoutError:
            item.abandoned = True
            raise RequestTimeout(f"the request did not finish within {timeout_s:g} s", None) from None
        except asyncio.CancelledError:
            item.abandoned = True
            raise
        timing.resume_s = time.perf_counter() - timing.done_at
        return outputs, timing

    # -- worker thread -----------------------------------------------------------------------
    def _gather(self) -> list[_Item] | None:
        with self._cond:
            while True:
                while not self._items and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return None
                first = self._items.popleft()
                if not first.abandoned:
                    break
            batch, rows = [first], first.rows
            if not first.batchable or self.max_batch_size <= 1:
                return batch
            deadline = first.enqueued + self.max_wait_s
            while rows < self.max_batch_size:
                for it in list(self._items):
                    if it.abandoned:
                        self._items.remove(it)
                    elif it.batchable and it.key == first.key and rows + it.rows <= self.max_batch_size:
                        self._items.remove(it)
                        batch.append(it)
                        rows += it.rows
                remaining = deadline - time.perf_counter()
                if rows >= self.max_batch_size or remaining <= 0 or self._stopped or self._arriving == 0:
                    break
                self._cond.wait(remaining)
            return batch

    def _work(self) -> None:
        while True:
            batch = self._gather()
            if batch is None:
                return
            self._run(batch)

    def _run(self, batch: list[_Item]) -> None:
        start = time.perf_counter()
        rows = [it.rows for it in batch]
        try:
            if len(batch) == 1:
                inputs = batch[0].inputs
            else:
                inputs = {k: np.concatenate([it.inputs[k] for it in batch], axis=0) for k in batch[0].inputs}
            outputs = batch[0].fn(inputs)
            model_s = time.perf_counter() - start
            offsets = np.cumsum(rows)[:-1]
            parts = {k: np.split(v, offsets, axis=0) for k, v in outputs.items()}
        except BaseException as e:  # delivered to every waiting request; the HTTP layer makes it a 500
            log.exception("batch of %d %s request(s) failed", len(batch), batch[0].endpoint)
            for it in batch:
                it.loop.call_soon_threadsafe(_deliver, it.future, None, e)
            return
        queue_times = [start - it.enqueued for it in batch]
        done_at = time.perf_counter()
        for i, it in enumerate(batch):
            timing = Timing(queue_times[i], model_s, len(batch), sum(rows), done_at=done_at)
            it.loop.call_soon_threadsafe(_deliver, it.future, ({k: p[i] for k, p in parts.items()}, timing), None)
        if self.observer is not None:
            try:
                self.observer(batch[0].endpoint, sum(rows), len(batch), queue_times, model_s)
            except Exception:  # metrics must never break inference
                log.exception("batch observer failed")
