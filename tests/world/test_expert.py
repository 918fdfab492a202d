"""The scripted expert solves every family over the tasks' 50 init states."""
import numpy as np

from world.env import BuiltinEnv
from world.expert import ScriptedExpert
from world.suites import TASKS


def test_expert_success_per_family():
    per_family: dict[str, list[bool]] = {}
    for name, task in TASKS.items():
        env = BuiltinEnv(task, render=False)
        for k, s in enumerate(env.get_init_states()):
            env.set_init_state(s)
            ex = ScriptedExpert(task, noise=0.2, seed=k)
            ok = False
            for _ in range(task.max_steps):
                ok = env.step(ex.act(env.scene))[2]
                if ok:
                    break
            per_family.setdefault(task.family, []).append(ok)
    for fam, oks in per_family.items():
        print(f"expert success {fam}: {np.mean(oks):.1%} over {len(oks)} episodes")
        assert np.mean(oks) > 0.8, fam
