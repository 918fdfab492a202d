"""amplify-serve built-in world: a numpy tabletop simulator, scripted expert and a data
generator writing LIBERO / AMPLIFY file layouts.

Imports only numpy (and h5py / imageio in ``generate`` / ``visualize``), never torch or
``amplify``, so light robot clients can use it. See docs/world.md.

Modules: ``scene`` (objects, physics), ``render`` (two 128x128 views + id buffer),
``tracks`` (exact point tracks), ``tasks`` (families, success, init states), ``suites``
(suites, instructions, text embeddings), ``expert`` (scripted expert), ``env``
(LIBERO-like env), ``generate`` (HDF5 writer), ``visualize`` (MP4/GIF/PNG), ``cli``.
"""
from .env import BuiltinEnv
from .expert import ScriptedExpert
from .suites import SUITES, TASKS, get_suite, get_task, get_text_embedding, instructions, list_suites
from .tasks import Task, check_success, get_init_states

__all__ = ["BuiltinEnv", "ScriptedExpert", "SUITES", "TASKS", "Task", "check_success", "get_init_states",
           "get_suite", "get_task", "get_text_embedding", "instructions", "list_suites"]
