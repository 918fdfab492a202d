"""A scripted expert with privileged access to the scene: a small phase machine per family.

Actions are proportional moves towards a waypoint (clipped to [-1, 1]) plus smooth
(low-pass filtered) gaussian noise on the position dims, so demonstrations differ.
"""
from __future__ import annotations

import numpy as np

from .scene import MAX_STEP, PUSHER_R, Scene
from .tasks import EDGES, Task

TRAVEL_Z = 0.13


class ScriptedExpert:
    """``act(scene) -> (7,) action`` for one task; ``noise`` is the std of the action noise."""

    def __init__(self, task: Task, noise: float = 0.2, seed: int = 0):
        self.task = task
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        self.phase = "approach"
        self.count = 0
        self._eps = np.zeros(3)
        self.travel_z = TRAVEL_Z + self.rng.uniform(-0.02, 0.02)

    def _go(self, ee: np.ndarray, target: np.ndarray, grip: float, gain: float = 1.0) -> np.ndarray:
        self._eps = 0.7 * self._eps + 0.3 * self.rng.normal(0.0, self.noise, 3)
        d = np.clip((target - ee) / MAX_STEP * gain, -1.0, 1.0) + self._eps
        return np.concatenate([np.clip(d, -1.0, 1.0), np.zeros(3), [grip]]).astype(np.float32)

    def _set(self, phase: str) -> None:
        self.phase, self.count = phase, 0

    def act(self, scene: Scene) -> np.ndarray:
        self.count += 1
        f = self.task.family
        if f == "push":
            return self._push(scene)
        return self._pick(scene, lift_only=(f == "lift"))

    # ---- families -----------------------------------------------------------
    def _push(self, s: Scene) -> np.ndarray:
        ee = s.ee.copy()
        o = self.task.objects[self.task.target]
        p = s.pos(self.task.target)
        d = np.array(EDGES[str(self.task.goal)])
        contact = PUSHER_R + o.half
        behind = p[:2] - d * (contact + 0.035)
        low = 0.015
        rel = p[:2] - ee[:2]
        across = abs(float(rel @ np.array([-d[1], d[0]])))
        if self.phase == "approach":
            if np.hypot(*(behind - ee[:2])) < 0.012:
                self._set("descend")
            tgt = np.array([*behind, max(self.travel_z, ee[2]) if np.hypot(*(behind - ee[:2])) > 0.05 else self.travel_z])
            return self._go(ee, tgt, 1.0)
        if self.phase == "descend":
            if ee[2] < low + 0.008:
                self._set("push")
            return self._go(ee, np.array([*behind, low]), 1.0)
        if self.phase == "push":
            if across > o.half * 0.8 or float(rel @ d) < 0:
                self._set("retreat")
            tgt = p[:2] - d * (contact - 0.03)
            return self._go(ee, np.array([*tgt, low]), 1.0)
        # retreat: go up, then approach again
        if ee[2] > self.travel_z - 0.01:
            self._set("approach")
        return self._go(ee, np.array([ee[0], ee[1], self.travel_z]), 1.0)

    def _pick(self, s: Scene, lift_only: bool) -> np.ndarray:
        ee = s.ee.copy()
        i = self.task.target
        o = self.task.objects[i]
        p = s.pos(i)
        grasp_z = max(p[2] + 0.5 * o.height, 0.015)
        ph = self.phase
        if ph == "approach":
            above = np.array([p[0], p[1], self.travel_z])
            if np.hypot(*(above[:2] - ee[:2])) < 0.01:
                self._set("descend")
            return self._go(ee, above, -1.0)
        if ph == "descend":
            if abs(ee[2] - grasp_z) < 0.008:
                self._set("grasp")
            return self._go(ee, np.array([p[0], p[1], grasp_z]), -1.0)
        if ph == "grasp":
            if s.held == i and self.count > 2:
                self._set("lift")
            elif self.count > 6:
                self._set("regrasp")
            return self._go(ee, np.array([p[0], p[1], grasp_z]), 1.0, gain=0.5)
        if ph == "regrasp":
            if ee[2] > self.travel_z - 0.01:
                self._set("approach")
            return self._go(ee, np.array([ee[0], ee[1], self.travel_z]), -1.0)
        if s.held != i and ph in ("lift", "carry", "lower"):
            self._set("regrasp")
            return self._go(ee, np.array([ee[0], ee[1], self.travel_z]), -1.0)
        if ph == "lift":
            top = 0.17 if lift_only else self.travel_z + 0.02
            if ee[2] > top - 0.015 and not lift_only:
                self._set("carry")
            return self._go(ee, np.array([ee[0], ee[1], top]), 1.0)
        b = s.pos(int(self.task.goal))
        if ph == "carry":
            if np.hypot(b[0] - ee[0] - (p[0] - ee[0]), b[1] - ee[1] - (p[1] - ee[1])) < 0.012:
                self._set("lower")
            off = p[:2] - ee[:2]
            return self._go(ee, np.array([b[0] - off[0], b[1] - off[1], self.travel_z + 0.02]), 1.0)
        if ph == "lower":
            if ee[2] < 0.10:
                self._set("release")
            return self._go(ee, np.array([ee[0], ee[1], 0.09]), 1.0)
        # release then rise
        return self._go(ee, np.array([ee[0], ee[1], self.travel_z]), -1.0, gain=0.5)
