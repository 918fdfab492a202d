"""Suites of built-in tasks and the fixed instruction -> 512-d text embedding table.

``SUITES`` maps a suite name (usable in AMPLIFY dataset strings such as
``[builtin_push:traj0.9]``) to its task names; ``TASKS`` maps a task name to its
:class:`~world.tasks.Task`.  Task names are the instruction with ``_`` for spaces, as in
LIBERO's file names.
"""
from __future__ import annotations

import hashlib

import numpy as np

from .scene import ObjSpec
from .tasks import TASK_REGISTRY, Task

TEXT_DIM = 512

_C = ObjSpec


def _build() -> list[Task]:
    cube, ball, bowl = "cube", "ball", "bowl"
    push_scene = (_C(cube, "red"), _C(cube, "blue"), _C(ball, "yellow"), _C(cube, "green"))
    tasks = [
        Task("push", push_scene, 0, "left", max_steps=100),
        Task("push", push_scene, 1, "right", max_steps=100),
        Task("push", push_scene, 2, "top", max_steps=100),
        Task("push", push_scene, 3, "bottom", max_steps=100),
    ]
    pick_a = (_C(cube, "red"), _C(ball, "yellow"), _C(bowl, "blue"), _C(bowl, "green"))
    pick_b = (_C(cube, "blue"), _C(ball, "green"), _C(bowl, "orange"), _C(bowl, "purple"))
    tasks += [
        Task("pick", pick_a, 0, 2, max_steps=120),
        Task("pick", pick_a, 1, 3, max_steps=120),
        Task("pick", pick_b, 0, 2, max_steps=120),
        Task("pick", pick_b, 1, 3, max_steps=120),
    ]
    lift_scene = (_C(ball, "red"), _C(cube, "blue"), _C(cube, "yellow"), _C(ball, "cyan"))
    tasks += [
        Task("lift", lift_scene, 0, max_steps=80),
        Task("lift", lift_scene, 1, max_steps=80),
        Task("lift", lift_scene, 2, max_steps=80),
    ]
    return tasks


TASKS: dict[str, Task] = {t.name: t for t in _build()}
TASK_REGISTRY.update(TASKS)
FAMILY_SUITE = {"push": "builtin_push", "pick": "builtin_pick", "lift": "builtin_lift"}
SUITES: dict[str, list[str]] = {s: [n for n, t in TASKS.items() if t.family == f] for f, s in FAMILY_SUITE.items()}
SUITES["builtin_all"] = list(TASKS)


def list_suites() -> dict[str, list[str]]:
    """Suite name -> task names."""
    return {k: list(v) for k, v in SUITES.items()}


def get_task(name: str) -> Task:
    """Task by name (or by instruction)."""
    return TASKS[name.replace(" ", "_")]


def get_suite(suite: str) -> list[Task]:
    """The tasks of a suite, in order."""
    return [TASKS[n] for n in SUITES[suite]]


def instructions(suite: str = "builtin_all") -> dict[str, str]:
    """Task name -> instruction."""
    return {n: TASKS[n].instruction for n in SUITES[suite]}


def get_text_embedding(instruction: str) -> np.ndarray:
    """(512,) float32 unit-norm gaussian seeded by sha256 of the normalised instruction."""
    key = " ".join(instruction.replace("_", " ").lower().split())
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(TEXT_DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)
