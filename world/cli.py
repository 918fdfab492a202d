"""Command line of the built-in world.

    python -m world.cli list                       # suites, tasks, instructions
    python -m world.cli generate --suite builtin_push --out DIR --demos-per-task 50
    python -m world.cli visualize --task pick_up_the_red_ball --out ep.mp4
    python -m world.cli eval-expert [--suite builtin_all] [--inits 50]
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .env import BuiltinEnv
from .expert import ScriptedExpert
from .suites import SUITES, get_suite


def eval_expert(suite: str = "builtin_all", inits: int = 50, noise: float = 0.0) -> dict[str, float]:
    """Expert success rate per task over the first ``inits`` init states (no rendering)."""
    out = {}
    for task in get_suite(suite):
        env = BuiltinEnv(task, render=False)
        oks = []
        for k, s in enumerate(env.get_init_states()[:inits]):
            env.set_init_state(s)
            ex = ScriptedExpert(task, noise=noise, seed=k)
            ok = False
            for _ in range(task.max_steps):
                ok = env.step(ex.act(env.scene))[2]
                if ok:
                    break
            oks.append(ok)
        out[task.name] = float(np.mean(oks))
    return out


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "generate":
        from .generate import main as gen

        return gen(argv[1:])
    if argv and argv[0] == "visualize":
        from .visualize import main as vis

        return vis(argv[1:])
    p = argparse.ArgumentParser(prog="python -m world.cli", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["list", "eval-expert", "generate", "visualize"])
    p.add_argument("--suite", default="builtin_all", choices=sorted(SUITES))
    p.add_argument("--inits", type=int, default=50)
    p.add_argument("--noise", type=float, default=0.0)
    a = p.parse_args(argv)
    if a.command == "list":
        for s, names in SUITES.items():
            print(f"{s} ({len(names)} tasks)")
            for t in get_suite(s):
                print(f"  {t.name}  [{t.family}] \"{t.instruction}\"")
    elif a.command == "eval-expert":
        t0 = time.perf_counter()
        res = eval_expert(a.suite, a.inits, a.noise)
        for n, r in res.items():
            print(f"{r:6.1%}  {n}")
        print(f"mean {np.mean(list(res.values())):.1%} ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
