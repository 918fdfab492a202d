"""A scripted expert whose action is a function of what a policy can observe.

``act(scene)`` reads only the current scene: the effector position and finger opening (the
proprioception), which object is held and where the objects are (all visible in the images). It
keeps no phase, counter or per-episode parameter, so the same observation always gets the same
action, and demonstrations differ only through their initial states. Motions are proportional moves
towards a waypoint, clipped to [-1, 1]:

* **pick / lift**: hover towards the object on a cone (the closer in xy, the lower), close the
  fingers once aligned at grasp height (closing takes several steps), lift once held, carry the object
  over the bowl at a safe height and open (pick) or keep lifting (lift). A grasp that closed on
  nothing opens again and re-approaches.
* **push**: go behind the object (as seen from the goal edge) on a cone, descend, push towards the
  edge while steering the effector back onto the object's centre line; when the object deflects
  sideways (or the effector gets out of place), back off upwards and re-approach from behind it.

``noise`` > 0 adds i.i.d. gaussian noise to the position dims (seeded); the default is none.
"""
from __future__ import annotations

import numpy as np

from .scene import GRASP_R, MAX_STEP, PUSHER_R, Scene, grip_hold
from .tasks import EDGES, Task

TRAVEL_Z = 0.13  # hover height
CARRY_Z = 0.15  # effector height while carrying an object to a bowl
LIFT_TOP = 0.18  # effector height a lift aims for
PUSH_Z = 0.015  # effector height while pushing
CONE = 1.5  # hover cone: target height rises by CONE per unit of xy distance
ALIGN_XY, ALIGN_Z = 0.012, 0.012  # grasp alignment tolerances
RELEASE_XY = 0.03  # the object this close to the bowl's centre: open (it lands inside)


class ScriptedExpert:
    """``act(scene) -> (7,) action`` for one task; stateless (``reset`` is a no-op)."""

    def __init__(self, task: Task, noise: float = 0.0, seed: int = 0):
        self.task = task
        self.noise = noise
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Nothing to reset: the expert keeps no state between steps."""

    def act(self, scene: Scene) -> np.ndarray:
        """(7,) float32 LIBERO action for the scene as it is now."""
        if self.task.family == "push":
            target, grip = self._push(scene)
        else:
            target, grip = self._pick(scene, lift_only=(self.task.family == "lift"))
        d = np.clip((target - scene.ee) / MAX_STEP, -1.0, 1.0)
        if self.noise > 0:
            d = np.clip(d + self.rng.normal(0.0, self.noise, 3), -1.0, 1.0)
        return np.concatenate([d, np.zeros(3), [grip]]).astype(np.float32)

    # ---- families -----------------------------------------------------------
    def _pick(self, s: Scene, lift_only: bool) -> tuple[np.ndarray, float]:
        ee, i = s.ee, self.task.target
        o = self.task.objects[i]
        p = s.pos(i)
        if s.held == i:
            if lift_only:
                return np.array([ee[0], ee[1], LIFT_TOP]), 1.0
            b = s.pos(int(self.task.goal))
            want = b[:2] - (p[:2] - ee[:2])  # effector xy that puts the object over the bowl's centre
            if ee[2] < CARRY_Z - 0.03:  # first lift straight up
                return np.array([ee[0], ee[1], CARRY_Z]), 1.0
            near = np.hypot(*(want - ee[:2])) < RELEASE_XY  # over the bowl's inside: open while centring
            return np.array([want[0], want[1], CARRY_Z]), -1.0 if near else 1.0
        grasp_z = max(p[2] + 0.5 * o.height, 0.015)
        dxy = float(np.hypot(p[0] - ee[0], p[1] - ee[1]))
        closing = s.grip < 0.99  # once closing started, looser tolerances (the fingers span GRASP_R)
        tol = 2.0 if closing else 1.0
        aligned = dxy < ALIGN_XY * tol and abs(ee[2] - grasp_z) < ALIGN_Z * tol
        closed_on_nothing = s.grip <= grip_hold(o)  # closed past its width without holding it: open, retry
        if aligned and not closed_on_nothing:
            return np.array([p[0], p[1], grasp_z]), 1.0  # close (over several steps) in place
        z = float(np.clip(grasp_z + CONE * max(dxy - ALIGN_XY / 2, 0.0), grasp_z, TRAVEL_Z))
        if s.grip < 0.99 and dxy < GRASP_R:  # fingers not open yet: wait above the object
            z = max(z, p[2] + o.height + 0.03)
        return np.array([p[0], p[1], z]), -1.0

    def _push(self, s: Scene) -> tuple[np.ndarray, float]:
        ee, i = s.ee, self.task.target
        o = self.task.objects[i]
        p = s.pos(i)
        d = np.array(EDGES[str(self.task.goal)])
        side = np.array([-d[1], d[0]])
        contact = PUSHER_R + o.half
        rel = p[:2] - ee[:2]
        along, across = float(rel @ d), float(rel @ side)
        low = ee[2] < p[2] + o.height - 0.015  # low enough to push it
        if low and abs(across) < 0.5 * o.half and contact - 0.02 < along < contact + 0.05:
            tgt = p[:2] - d * (contact - 0.04)  # push on, steering onto the object's centre line
            return np.array([tgt[0], tgt[1], PUSH_Z]), 1.0
        clear = p[2] + o.height + 0.03
        if ee[2] < clear and float(np.hypot(*rel)) < contact + 0.02:  # out of place next to it: back off
            away = -rel / max(float(np.hypot(*rel)), 1e-6)
            tgt = ee[:2] + away * MAX_STEP
            return np.array([tgt[0], tgt[1], clear + 0.02]), 1.0
        behind = p[:2] - d * (contact + 0.03)
        dist = float(np.hypot(*(behind - ee[:2])))
        z = float(np.clip(PUSH_Z + CONE * max(dist - 0.01, 0.0), PUSH_Z, TRAVEL_Z))
        return np.array([behind[0], behind[1], z]), 1.0
