"""Objects and physics of the built-in tabletop world.

World frame: the table is the unit square ``x, y in [0, 1]`` (x to the right, y away
from the viewer), ``z`` up in the same units.  An end effector (a two-finger gripper)
moves by LIBERO's 7-D action; objects are flat-topped (cube, ball, bowl) and only
translate, never rotate, so every point on an object moves rigidly with its centre.

The whole dynamic state is one float64 vector (like LIBERO's flattened MuJoCo state)::

    [ee_x, ee_y, ee_z, grip, held, hold_dx, hold_dy, hold_dz, (obj_x, obj_y, obj_z) * n_obj]

``grip`` is the finger opening in [0, 1] (1 open), ``held`` the index of the carried
object or -1, ``hold_d*`` the object's offset from the effector while carried, and
``obj_z`` the height of an object's base above the table.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_STEP = 0.025  # table units per step for |action| = 1 (dims 0-2)
XY_LIM = (0.03, 0.97)
Z_LIM = (0.01, 0.30)
GRIP_MAX = 0.06  # half gap between the fingers when fully open
GRIP_RATE = 0.08  # change of opening per step (closing on an object takes 3 steps)
PUSHER_R = 0.025  # radius of the effector when it pushes
GRASP_R = 0.03  # xy distance within which an object sits between the fingers
RELEASE_OPEN = 0.2  # a held object drops once the opening exceeds its width by this (or is full)
FALL = 0.04  # fall per step of a released object
N_EE = 8  # entries before the objects in the state vector

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (35, 175, 60),
    "blue": (35, 80, 225),
    "yellow": (240, 205, 30),
    "purple": (150, 55, 200),
    "orange": (245, 130, 25),
    "cyan": (30, 200, 210),
}

# kind: footprint drawn ("box", "disc", "ring"); half: half width; height: top above base
SHAPES: dict[str, dict] = {
    "cube": dict(kind="box", half=0.045, height=0.05, movable=True),
    "ball": dict(kind="disc", half=0.042, height=0.07, movable=True),
    "bowl": dict(kind="ring", half=0.085, height=0.03, movable=False, inner=0.062),
}


@dataclass(frozen=True)
class ObjSpec:
    """A static description of one object: a coloured shape."""

    shape: str
    colour: str

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def kind(self) -> str:
        return SHAPES[self.shape]["kind"]

    @property
    def half(self) -> float:
        return SHAPES[self.shape]["half"]

    @property
    def height(self) -> float:
        return SHAPES[self.shape]["height"]

    @property
    def movable(self) -> bool:
        return SHAPES[self.shape]["movable"]

    @property
    def inner(self) -> float:
        return SHAPES[self.shape].get("inner", 0.0)

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLOURS[self.colour]


def grip_hold(spec: ObjSpec) -> float:
    """Finger opening at which the fingers touch ``spec``."""
    return min(1.0, (spec.half + 0.004) / GRIP_MAX)


class Scene:
    """Objects + effector; ``step`` applies one LIBERO action. Deterministic."""

    def __init__(self, objects: list[ObjSpec]):
        self.objects = list(objects)
        self.n = len(self.objects)
        self.state = np.zeros(N_EE + 3 * self.n)  # (D,)
        self.state[4] = -1

    # ---- state access -------------------------------------------------------
    @property
    def state_dim(self) -> int:
        return N_EE + 3 * self.n

    def set_state(self, state: np.ndarray) -> None:
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        assert state.shape == (self.state_dim,), (state.shape, self.state_dim)
        self.state = state.copy()

    def get_state(self) -> np.ndarray:
        return self.state.copy()

    @property
    def ee(self) -> np.ndarray:  # (3,)
        return self.state[0:3]

    @property
    def grip(self) -> float:
        return float(self.state[3])

    @property
    def held(self) -> int:
        return int(round(self.state[4]))

    def pos(self, i: int) -> np.ndarray:  # (3,) base centre of object i
        return self.state[N_EE + 3 * i: N_EE + 3 * i + 3]

    def positions(self) -> np.ndarray:  # (n, 3)
        return self.state[N_EE:].reshape(self.n, 3)

    def index(self, name: str) -> int:
        return [o.name for o in self.objects].index(name)

    # ---- physics ------------------------------------------------------------
    def rest_height(self, i: int) -> float:
        """Height at which object i comes to rest (table, bowl floor or another object)."""
        p = self.pos(i)
        best = 0.0
        for j, o in enumerate(self.objects):
            if j == i or j == self.held:
                continue
            q = self.pos(j)
            d = float(np.hypot(p[0] - q[0], p[1] - q[1]))
            if o.kind == "ring" and d < o.inner:
                best = max(best, q[2] + 0.01)
            elif o.movable and d < o.half * 0.9 and q[2] <= p[2] - 1e-6:
                best = max(best, q[2] + o.height)
        return best

    def step(self, action: np.ndarray) -> None:
        """Apply a 7-D action: xyz deltas in [-1, 1], rotation ignored, gripper -1 open / +1 close."""
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[:7], -1.0, 1.0)
        s = self.state
        ee = np.clip(s[0:3] + a[0:3] * MAX_STEP, [XY_LIM[0], XY_LIM[0], Z_LIM[0]], [XY_LIM[1], XY_LIM[1], Z_LIM[1]])
        s[0:3] = ee
        close = a[6] > 0.0
        g_before = float(s[3])
        g = g_before + float(np.clip((0.0 if close else 1.0) - g_before, -GRIP_RATE, GRIP_RATE))
        held = self.held
        if held >= 0 and not close and g >= min(grip_hold(self.objects[held]) + RELEASE_OPEN, 1.0):
            held = -1  # released once the fingers opened clear of it (3 opening steps)
        if held < 0 and close:
            for i, o in enumerate(self.objects):
                p = self.pos(i)
                if not o.movable or not g <= grip_hold(o) < g_before:
                    continue  # only fingers closing through the object's width grasp it (closed ones cannot)
                if np.hypot(ee[0] - p[0], ee[1] - p[1]) < GRASP_R and p[2] - 0.005 <= ee[2] <= p[2] + o.height:
                    held = i
                    s[5:8] = p - ee
                    break
        s[4] = held
        if held >= 0:
            g = max(g, grip_hold(self.objects[held]))
            p = self.pos(held)
            p[:] = ee + s[5:8]
            p[2] = max(p[2], 0.0)
        s[3] = g
        # falling
        for i, o in enumerate(self.objects):
            if i == held or not o.movable:
                continue
            p = self.pos(i)
            r = self.rest_height(i)
            if p[2] > r:
                p[2] = max(r, p[2] - FALL)
            elif p[2] < r - 1e-9:  # pushed into a bowl / onto a raised level
                p[2] = r
        self._push(ee, g)

    def _push(self, ee: np.ndarray, g: float) -> None:
        """Effector pushes objects it overlaps; objects on the table push each other."""
        held = self.held
        for i, o in enumerate(self.objects):
            if i == held or not o.movable:
                continue
            p = self.pos(i)
            if not (ee[2] < p[2] + o.height and ee[2] + 0.04 > p[2]):
                continue
            d = p[:2] - ee[:2]
            dist = float(np.hypot(*d))
            if g > 0.5 and dist < GRASP_R:
                continue  # between the open fingers
            reach = PUSHER_R + o.half
            if dist < reach:
                u = d / dist if dist > 1e-9 else np.array([1.0, 0.0])
                p[:2] = ee[:2] + u * reach
        for _ in range(2):
            for i, oi in enumerate(self.objects):
                for j, oj in enumerate(self.objects):
                    if j <= i or not (oi.movable and oj.movable) or held in (i, j):
                        continue
                    pi, pj = self.pos(i), self.pos(j)
                    if abs(pi[2] - pj[2]) > 0.02:
                        continue
                    d = pj[:2] - pi[:2]
                    dist = float(np.hypot(*d))
                    reach = oi.half + oj.half
                    if dist < reach:
                        u = d / dist if dist > 1e-9 else np.array([1.0, 0.0])
                        push = (reach - dist) / 2
                        pi[:2] -= u * push
                        pj[:2] += u * push
        for i, o in enumerate(self.objects):
            if i != held and o.movable:
                p = self.pos(i)
                p[:2] = np.clip(p[:2], o.half, 1.0 - o.half)

    # ---- proprioception -----------------------------------------------------
    def joint_pos(self) -> np.ndarray:
        """7 joint angles of a virtual arm (base behind the table), a smooth function of the effector."""
        return joint_pos_from_ee(self.ee)

    def gripper_qpos(self) -> np.ndarray:
        """2 finger positions like LIBERO's Panda: (+0.04 g, -0.04 g)."""
        return np.array([0.04 * self.grip, -0.04 * self.grip])


def joint_pos_from_ee(ee: np.ndarray) -> np.ndarray:
    """Deterministic pseudo inverse kinematics of a 2-link arm based at (0.5, -0.25, 0.35): (3,) -> (7,)."""
    dx, dy, dz = ee[0] - 0.5, ee[1] + 0.25, ee[2] - 0.35
    yaw = np.arctan2(dx, dy)
    reach = np.hypot(dx, dy)
    l1 = l2 = 0.75
    d = float(np.clip(np.hypot(reach, dz), 1e-6, l1 + l2 - 1e-6))
    elbow = np.arccos(np.clip((l1 * l1 + l2 * l2 - d * d) / (2 * l1 * l2), -1.0, 1.0))
    shoulder = np.arctan2(dz, reach) + np.arccos(np.clip((l1 * l1 + d * d - l2 * l2) / (2 * l1 * d), -1.0, 1.0))
    wrist = -(shoulder - (np.pi - elbow)) - np.pi / 2
    return np.array([yaw, np.pi / 2 - shoulder, 0.0, -(np.pi - elbow), 0.0, wrist, np.pi / 4 + yaw])
