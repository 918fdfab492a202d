"""The inference engine: one back end, its batcher and its text resolver; numpy in, numpy out.

Knows nothing of HTTP. Each call is queued on the batcher, keyed by endpoint, trailing shapes and
options, so only compatible requests share a model call. Seeded top-k requests run alone, so
their samples depend on the seed only.
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Sequence

import numpy as np

from amplify.info import ModelInfo
from amplify.inputs import InputError
from service.backends.base import Backend
from service.batching import Batcher, BatchObserver, Timing
from service.text import TextResolver

log = logging.getLogger("amplify.service")


def _key(endpoint: str, inputs: dict[str, np.ndarray], *options: Any) -> tuple:
    return (endpoint, *((k, v.shape[1:], v.dtype.str) for k, v in sorted(inputs.items())), *options)


class InferenceEngine:
    """Runs validated requests on ``backend`` through a :class:`Batcher` (its own worker thread)."""

    def __init__(self, backend: Backend, text: TextResolver, max_batch_size: int = 16, max_wait_ms: float = 5.0,
                 queue_size: int = 256, timeout_s: float = 30.0, observer: BatchObserver | None = None):
        self.backend = backend
        self.info: ModelInfo = backend.info
        self.text = text
        self.timeout_s = timeout_s
        self.batcher = Batcher(max_batch_size, max_wait_ms, queue_size, observer)

    def start(self) -> None:
        self.batcher.start()

    def stop(self) -> None:
        self.batcher.stop()
        self.backend.close()

    def arriving(self) -> contextlib.AbstractContextManager[None]:
        """Context manager around reading and validating a request (see :meth:`Batcher.arriving`)."""
        return self.batcher.arriving()

    def embed(self, text: Sequence[str]) -> np.ndarray:
        """Instructions -> (b, E) embeddings (table, else text encoder, else UnknownInstruction)."""
        return self.text(text)

    def _check_sampling(self, sampling: str) -> None:
        if sampling not in self.backend.sampling_modes:
            raise InputError(f"sampling {sampling!r} is not available on the {self.backend.name} back end (it implements "
                             f"{list(self.backend.sampling_modes)}; the torch back end implements topk)", "sampling")

    async def _submit(self, endpoint: str, fn, inputs: dict[str, np.ndarray], *options: Any,
                      batchable: bool = True) -> tuple[dict[str, np.ndarray], Timing]:
        rows = len(next(iter(inputs.values())))
        return await self.batcher.submit(endpoint, _key(endpoint, inputs, *options), fn, inputs, rows,
                                         batchable=batchable, timeout_s=self.timeout_s)

    # -- endpoints ---------------------------------------------------------------------------
    async def encode(self, velocities: np.ndarray):
        return await self._submit("encode", lambda x: self.backend.encode(x["velocities"]), {"velocities": velocities})

    async def decode(self, codes: np.ndarray | None = None, indices: np.ndarray | None = None,
                     return_logits: bool = True):
        if indices is not None:
            def fn(x):
                return self.backend.decode(self.backend.indices_to_codes(x["indices"]), return_logits=return_logits)
            return await self._submit("decode", fn, {"indices": indices}, return_logits)
        return await self._submit("decode", lambda x: self.backend.decode(x["codes"], return_logits=return_logits),
                                  {"codes": codes}, return_logits)

    async def predict_codes(self, images: np.ndarray, text_emb: np.ndarray, sampling: str, seed: int | None):
        self._check_sampling(sampling)

        def fn(x):
            return self.backend.predict_codes(x["images"], x["text_emb"], sampling, seed)
        return await self._submit("predict_codes", fn, {"images": images, "text_emb": text_emb}, sampling,
                                  batchable=seed is None or sampling == "argmax")

    async def predict_traj(self, images: np.ndarray, text_emb: np.ndarray, init_points: np.ndarray, sampling: str,
                           seed: int | None):
        self._check_sampling(sampling)

        def fn(x):
            return self.backend.predict_traj(x["images"], x["text_emb"], x["init_points"], sampling, seed)
        return await self._submit("predict_traj", fn, {"images": images, "text_emb": text_emb, "init_points": init_points},
                                  sampling, batchable=seed is None or sampling == "argmax")

    async def act(self, images: np.ndarray, proprio: np.ndarray, text_emb: np.ndarray, sampling: str, seed: int | None):
        self._check_sampling(sampling)

        def fn(x):
            return self.backend.act(x["images"], x["proprio"], x["text_emb"], sampling, seed)
        return await self._submit("act", fn, {"images": images, "proprio": proprio, "text_emb": text_emb}, sampling,
                                  batchable=seed is None or sampling == "argmax")

    # -- warm-up -----------------------------------------------------------------------------
    def warm_up(self) -> float:
        """Run every entry point once on zeros (b = 1) before serving; returns the seconds it took."""
        i, b = self.info, self.backend
        start = time.perf_counter()
        images = np.zeros((1, i.num_views, *i.image_size, 3), np.float32)
        text = np.zeros((1, i.text_embedding_dim), np.float32)
        enc = b.encode(np.zeros((1, i.num_views, i.num_steps, i.num_tracks, 2), np.float32))
        b.decode(b.indices_to_codes(enc["indices"]))
        b.predict_traj(images, text, np.zeros((1, i.num_views, i.num_tracks, 2), np.float32))
        b.act(images, np.zeros((1, i.proprio_dim), np.float32), text)
        return time.perf_counter() - start
