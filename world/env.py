"""A LIBERO-like environment over the built-in world.

Same interface as LIBERO's ``OffScreenRenderEnv`` as robot clients use it: ``reset()``,
``set_init_state(state)``, ``step(action) -> (obs, reward, done, info)``,
``check_success()``, ``language_instruction``.  Observation images are UPSIDE DOWN
(``upright[::-1]``), exactly as LIBERO returns them.
"""
from __future__ import annotations

import numpy as np

from .render import entity_table, render
from .scene import Scene
from .suites import get_task
from .tasks import Task, check_success, get_init_states

__all__ = ["BuiltinEnv", "get_init_states"]


class BuiltinEnv:
    """Built-in tabletop env for one task. ``render=False`` skips images (fast evaluation)."""

    def __init__(self, task: Task | str, camera_size: int = 128, render: bool = True):
        assert camera_size == 128, "the built-in renderer draws 128x128 images"
        self.task = get_task(task) if isinstance(task, str) else task
        self.scene: Scene = self.task.new_scene()
        self.language_instruction = self.task.instruction
        self.render_images = render
        self._init = get_init_states(self.task)
        self.steps = 0
        self.scene.set_state(self._init[0])

    # ---- LIBERO interface ---------------------------------------------------
    def get_init_states(self) -> np.ndarray:
        """(50, D) fixed initial states of this env's task."""
        return self._init.copy()

    def seed(self, seed: int) -> None:
        """No-op: the world has no hidden randomness."""

    def reset(self) -> dict:
        self.steps = 0
        self.scene.set_state(self._init[0])
        return self.get_obs()

    def set_init_state(self, state: np.ndarray) -> dict:
        self.steps = 0
        self.scene.set_state(state)
        return self.get_obs()

    def get_sim_state(self) -> np.ndarray:
        return self.scene.get_state()

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, dict]:
        self.scene.step(action)
        self.steps += 1
        ok = self.check_success()
        return self.get_obs(), float(ok), ok, {"success": ok, "steps": self.steps}

    def check_success(self) -> bool:
        return check_success(self.task, self.scene)

    def close(self) -> None:
        pass

    # ---- observations -------------------------------------------------------
    def render_upright(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """view -> (upright image (128,128,3) uint8, ids (128,128) int8)."""
        ent = entity_table(self.scene)
        return {v: render(self.scene, v, ent) for v in ("agentview", "eye_in_hand")}

    def get_obs(self, images: bool | None = None) -> dict:
        """The observation now; ``images`` overrides the env's ``render`` setting for this call."""
        obs = {
            "robot0_joint_pos": self.scene.joint_pos(),  # (7,)
            "robot0_gripper_qpos": self.scene.gripper_qpos(),  # (2,)
            "robot0_eef_pos": self.scene.ee.copy(),  # (3,)
        }
        if self.render_images if images is None else images:
            r = self.render_upright()
            obs["agentview_image"] = np.ascontiguousarray(r["agentview"][0][::-1])
            obs["robot0_eye_in_hand_image"] = np.ascontiguousarray(r["eye_in_hand"][0][::-1])
        return obs
