"""How a robot executes action chunks: temporal aggregation (ACT) or chunked replanning, and a sticky gripper.

Both executors take a chunk (A, action_dim) predicted at step t and answer the action to run at each step;
:class:`GripperLatch` then decides the gripper entry of the action that runs.
"""
from __future__ import annotations

import numpy as np


class TemporalAggregator:
    """Query every step; the action at step t averages every chunk covering t with weights
    ``w_i = exp(-k * i)``, i = 0 for the oldest prediction (ACT's temporal ensembling)."""

    def __init__(self, k: float = 0.01):
        self.k = float(k)
        self.reset()

    def reset(self) -> None:
        self._chunks: list[tuple[int, np.ndarray]] = []  # (start step, (A, d)) oldest first

    def needs_query(self, step: int) -> bool:
        return True

    def add(self, step: int, chunk: np.ndarray) -> None:
        self._chunks.append((step, np.asarray(chunk, dtype=np.float64)))

    def action(self, step: int) -> np.ndarray:
        self._chunks = [(s, c) for s, c in self._chunks if step - s < len(c)]  # drop chunks that ended
        if not self._chunks:
            raise RuntimeError(f"no predicted chunk covers step {step}")
        preds = np.stack([c[step - s] for s, c in self._chunks])  # (m, d) oldest first
        w = np.exp(-self.k * np.arange(len(preds)))
        return (w[:, None] * preds).sum(0) / w.sum()


class ChunkedExecutor:
    """Query every ``replan_every`` steps and run that chunk's actions in order until the next query."""

    def __init__(self, replan_every: int):
        if replan_every < 1:
            raise ValueError(f"replan_every must be >= 1, got {replan_every}")
        self.replan_every = int(replan_every)
        self.reset()

    def reset(self) -> None:
        self._start, self._chunk = 0, None

    def needs_query(self, step: int) -> bool:
        return self._chunk is None or step - self._start >= min(self.replan_every, len(self._chunk))

    def add(self, step: int, chunk: np.ndarray) -> None:
        self._start, self._chunk = step, np.asarray(chunk, dtype=np.float64)

    def action(self, step: int) -> np.ndarray:
        return self._chunk[step - self._start]


class GripperLatch:
    """A sticky gripper: once the gripper command (the last action dimension, > 0 close, else open)
    changes, the new command is kept for ``hold`` steps whatever the policy predicts, so a grasp or a
    release runs to completion instead of flipping every step. ``hold`` = 0 passes actions through."""

    def __init__(self, hold: int, dim: int = -1):
        if hold < 0:
            raise ValueError(f"hold must be >= 0, got {hold}")
        self.hold, self.dim = int(hold), dim
        self.reset()

    def reset(self) -> None:
        self._command: float | None = None  # +1 close / -1 open, as run last
        self._left = 0  # steps the current command is still held

    def __call__(self, action: np.ndarray) -> np.ndarray:
        """The action to run: a copy whose gripper entry is the command run, +1 or -1 (unless ``hold`` is 0)."""
        action = np.array(action, dtype=np.float64)
        if self.hold == 0:
            return action
        want = 1.0 if action[self.dim] > 0 else -1.0
        if self._command is None or (want != self._command and self._left <= 0):
            if self._command is not None:
                self._left = self.hold
            self._command = want
        self._left -= 1
        action[self.dim] = self._command
        return action
