"""Task families, tasks, success checks and fixed initial states.

Families: ``push`` (push an object to a table edge), ``pick`` (put an object in a bowl),
``lift`` (pick an object up and hold it above the table).  Every task has a fixed scene
(object list), an instruction in words, a success check on the scene, and 50 fixed,
deterministic initial states (like LIBERO's init states) from a seed hashed from the name: the
benchmark. Demonstrations start from :func:`demo_init_states`, a separate stream that never
returns a benchmark state, so evaluation is always on initial states no demonstration used.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from .scene import N_EE, ObjSpec, Scene

NUM_INIT_STATES = 50
EDGE = 0.2  # an object "at the left edge" has x < EDGE, etc.
LIFT_Z = 0.1  # base height of a lifted object
EDGES = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "top": (0.0, 1.0), "bottom": (0.0, -1.0)}


@dataclass(frozen=True)
class Task:
    """A task: family, scene objects, the object acted on and the goal (edge name or bowl index)."""

    family: str
    objects: tuple[ObjSpec, ...]
    target: int  # index of the object to move
    goal: str | int = ""  # push: edge name; pick: index of the bowl
    max_steps: int = 120
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def instruction(self) -> str:
        t = self.objects[self.target].name
        if self.family == "push":
            return f"push the {t} to the {self.goal} edge"
        if self.family == "pick":
            return f"put the {t} in the {self.objects[int(self.goal)].name}"
        return f"pick up the {t}"

    @property
    def name(self) -> str:
        return self.instruction.replace(" ", "_")

    def new_scene(self) -> Scene:
        return Scene(list(self.objects))


def check_success(task: Task, scene: Scene) -> bool:
    """True when ``scene`` satisfies ``task``."""
    p = scene.pos(task.target)
    if task.family == "push":
        dx, dy = EDGES[str(task.goal)]
        on_table = p[2] < 0.005 and scene.held != task.target
        v = p[0] if dx != 0 else p[1]
        return bool(on_table and ((v < EDGE) if (dx + dy) < 0 else (v > 1 - EDGE)))
    if task.family == "pick":
        b = task.objects[int(task.goal)]
        q = scene.pos(int(task.goal))
        d = np.hypot(p[0] - q[0], p[1] - q[1])
        return bool(d < b.inner and scene.held != task.target and abs(p[2] - scene.rest_height(task.target)) < 1e-6)
    if task.family == "lift":
        return bool(scene.held == task.target and p[2] > LIFT_Z)
    raise ValueError(task.family)


def _seed(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


def _sample_positions(task: Task, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) object positions: non-overlapping, goal-reachable, distractors off the push path."""
    objs = task.objects
    for _ in range(1000):
        pos = np.zeros((len(objs), 2))
        ok = True
        for i, o in enumerate(objs):
            for _ in range(200):
                if i == task.target and task.family == "push":
                    dx, dy = EDGES[str(task.goal)]
                    along = rng.uniform(0.5, 0.78)  # distance-ish from the goal edge
                    across = rng.uniform(0.2, 0.8)
                    x = (1 - along) if dx > 0 else along if dx < 0 else across
                    y = (1 - along) if dy > 0 else along if dy < 0 else across
                    cand = np.array([x, y])
                else:
                    m = o.half + 0.07
                    cand = rng.uniform(m, 1 - m, size=2)
                good = all(np.hypot(*(cand - pos[j])) > o.half + objs[j].half + 0.06 for j in range(i))
                if good and task.family == "push" and i != task.target and i > task.target:
                    good = _off_path(task, pos[task.target], cand, o.half)
                if good:
                    pos[i] = cand
                    break
            else:
                ok = False
                break
        if ok:
            return pos
    raise RuntimeError(f"could not place objects for {task.name}")


def _off_path(task: Task, tgt: np.ndarray, p: np.ndarray, half: float) -> bool:
    """True when p is clear of the corridor the pushed object sweeps (and the space behind it)."""
    d = np.array(EDGES[str(task.goal)])
    rel = p - tgt
    along = float(rel @ d)
    across = abs(float(rel @ np.array([-d[1], d[0]])))
    return across > task.objects[task.target].half + half + 0.05 or along < -0.25


def _sample_init_states(task: Task, rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, D) initial states drawn from ``rng``: effector above the table, objects placed."""
    scene = task.new_scene()
    out = np.zeros((n, scene.state_dim))
    order = [task.target] + [i for i in range(len(task.objects)) if i != task.target]
    # sample with the target first (so distractors avoid its path), then restore the order
    perm = Task(task.family, tuple(task.objects[i] for i in order), 0, task.goal if task.family != "pick"
                else order.index(int(task.goal)))
    for k in range(n):
        s = np.zeros(scene.state_dim)
        s[0:3] = (rng.uniform(0.35, 0.65), rng.uniform(0.3, 0.5), rng.uniform(0.14, 0.2))
        s[3] = 1.0
        s[4] = -1
        pos = _sample_positions(perm, rng)
        for j, i in enumerate(order):
            s[N_EE + 3 * i: N_EE + 3 * i + 2] = pos[j]
        out[k] = s
    return out


def make_init_states(task: Task, n: int = NUM_INIT_STATES) -> np.ndarray:
    """(n, D) fixed initial states of a task (the benchmark), deterministic in the task name."""
    return _sample_init_states(task, np.random.default_rng(_seed(task.name)), n)


def _task(task: Task | str) -> Task:
    """A task, or a built-in task by name."""
    return TASK_REGISTRY[task.replace(" ", "_")] if isinstance(task, str) else task


def demo_init_states(task: Task | str, n: int, seed: int = 0) -> np.ndarray:
    """(n, D) initial states for demonstrations: a separate seeded stream, never a benchmark state.

    The stream is seeded from the task name, a "demo" tag and ``seed``, so it is independent of the
    benchmark's 50 states; any draw that lies within 1e-6 of a benchmark state is dropped (the
    chance is nil for continuous draws, the check makes it a guarantee)."""
    task = _task(task)
    bench = get_init_states(task)
    rng = np.random.default_rng([_seed(task.name), _seed("demonstrations"), int(seed)])
    out = []
    while len(out) < n:
        for s in _sample_init_states(task, rng, n - len(out)):
            if np.abs(bench - s[None]).max(axis=1).min() > 1e-6:
                out.append(s)
    return np.stack(out)


def shared_demo_init_states(task: Task | str, n: int, seed: int = 0) -> np.ndarray:
    """(n, D) initial states shared by every built-in task of the same scene (same objects): state k comes
    from the ``demo_init_states`` stream of sibling ``k % m`` (siblings sorted by name), so demonstration k
    of each sibling starts from the same layout and only the instruction says which object to move.
    Never a benchmark state of ``task``; a task with no siblings gets its own ``demo_init_states``."""
    task = _task(task)
    siblings = sorted(t.name for t in TASK_REGISTRY.values() if t.objects == task.objects) or [task.name]
    if task.name not in siblings:  # a task outside the registry
        return demo_init_states(task, n, seed)
    bench = get_init_states(task)
    m = len(siblings)
    out: list[np.ndarray] = []
    per = -(-n // m)
    while len(out) < n:
        streams = [demo_init_states(name, per, seed) for name in siblings]
        out = [streams[k % m][k // m] for k in range(per * m)]
        out = [s for s in out if np.abs(bench - s[None]).max(axis=1).min() > 1e-6][:n]
        per += 1
    return np.stack(out)


def distractor_starts(task: Task | str, states: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """A copy of initial states (n, D) in which a seeded ``fraction`` of them start the effector, open,
    above one of the objects the task does not move (a distractor or the bowl), the objects where they were.
    Demonstrations from these show leaving the object the effector is at for the one the instruction
    names; ``fraction`` 0 returns the states unchanged."""
    task = _task(task)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"distractor start fraction must be in [0, 1], got {fraction}")
    out = np.array(states, dtype=np.float64, copy=True)
    rng = np.random.default_rng([_seed(task.name), _seed("distractor starts"), int(seed)])
    others = [i for i in range(len(task.objects)) if i != task.target]
    scene = task.new_scene()
    for k in np.flatnonzero(rng.random(len(out)) < fraction):
        s = out[k]  # a view: written in place
        j = int(rng.choice(others))
        top = s[N_EE + 3 * j + 2] + scene.objects[j].height
        s[0:2] = np.clip(s[N_EE + 3 * j:N_EE + 3 * j + 2] + rng.normal(0.0, 0.02, 2), 0.05, 0.95)
        s[2] = rng.uniform(top + 0.04, max(top + 0.05, 0.2))
        s[3], s[4] = 1.0, -1
    return out


_INIT_CACHE: dict[str, np.ndarray] = {}
# Every built-in task by name, filled by ``world.suites`` when it builds them (this module never
# imports the suites: they are made of tasks).
TASK_REGISTRY: dict[str, Task] = {}


def get_init_states(task: Task | str) -> np.ndarray:
    """(50, D) float64 fixed initial states of a task, or of a built-in task by name (cached)."""
    task = _task(task)
    if task.name not in _INIT_CACHE:
        _INIT_CACHE[task.name] = make_init_states(task)
    return _INIT_CACHE[task.name].copy()
