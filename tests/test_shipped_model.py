"""The default model shipped with the package (``amplify/default_model``): what ``amplify serve`` serves with
no model named and no build of the user's. It must load, come from the recipe ``amplify build-default`` runs
today, carry its own held-out evaluation, and act: in the built-in world, on held-out benchmark states, it
succeeds in most episodes the scripted expert succeeds in (a random policy in none)."""
import json

import pytest
import torch
from safetensors import safe_open

from amplify.defaults import default_model_dir, shipped_bundle_dir

SHIPPED = shipped_bundle_dir()
pytestmark = pytest.mark.skipif(not (SHIPPED / "model.safetensors").is_file(),
                                reason=f"no shipped model at {SHIPPED} (an install without the package data)")


@pytest.fixture(scope="module")
def shipped():
    from amplify.policy import AMPLIFY

    return AMPLIFY.load(SHIPPED)


def test_it_comes_from_the_recipe_build_default_runs_now(shipped):
    """A changed recipe leaves the shipped weights stale: rebuild (`amplify build-default --eval-per-task 20`) and
    ship again (`python -m training.ship_default BUNDLE`)."""
    from training.default_bundle import RECIPE

    recorded = shipped.metadata["build_report"]["recipe"]
    assert recorded == json.loads(json.dumps(RECIPE)), "the shipped model was built with another recipe"


def test_its_weights_are_small_and_its_metadata_names_no_build_machine_path(shipped):
    from amplify.checkpoints import INT8_SCALE_SUFFIX
    from amplify.policy import TEXT_TABLE_KEY
    from training.ship_default import INT8_PREFIXES

    assert (SHIPPED / "model.safetensors").stat().st_size < 20e6
    with safe_open(str(SHIPPED / "model.safetensors"), "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys() if k != TEXT_TABLE_KEY}
    assert {d for k, d in dtypes.items() if k.startswith(INT8_PREFIXES) and k.endswith(".weight")} >= {"I8"}
    assert set(dtypes.values()) == {"F16", "I64", "I8"}  # float state, BatchNorm's counters, the int8 kernels
    assert all(dtypes[k[: -len(INT8_SCALE_SUFFIX)]] == "I8" for k in dtypes if k.endswith(INT8_SCALE_SUFFIX))
    assert all(p.startswith("<work>") for p in shipped.metadata["parts"].values())
    text = (SHIPPED / "config.json").read_text()
    assert '"/' not in text, "an absolute path of the build machine in the shipped metadata"
    assert next(shipped.parameters()).dtype == torch.float32  # loaded back as float32


def test_its_recorded_evaluation_meets_the_target(shipped):
    """The metadata /metadata serves: held-out states, beside the expert and a random policy, the latch it runs."""
    ev = shipped.metadata["evaluation"]
    assert ev["episodes_per_task"] >= 20 and "never used by demonstrations" in ev["init_states"]
    assert ev["model_over_expert"] >= 0.8 and ev["random"]["success_rate"] == 0.0
    assert ev["gripper_hold"] == shipped.metadata["gripper_hold"] == 4 and ev["execute"] == 1
    assert shipped.metadata["shipped"]["build_weights_sha256"]


def test_serving_with_no_model_uses_it_unless_the_user_built_one(monkeypatch, tmp_path):
    monkeypatch.setenv("AMPLIFY_HOME", str(tmp_path))
    assert default_model_dir() == SHIPPED
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "config.json").write_text("{}")
    assert default_model_dir() == SHIPPED  # a directory without weights is not a build
    (tmp_path / "default" / "model.safetensors").write_bytes(b"")
    assert default_model_dir() == tmp_path / "default"


@pytest.mark.slow
def test_it_acts_in_the_world_on_held_out_states(shipped):
    """110 closed-loop episodes (benchmark states 0..9 of all 11 tasks; no demonstration started there) with the
    settings the model records; the expert and a random policy on the same episodes. Measured on the build
    machine: 96/110, expert 110/110, in 28 s (docs/training.md "The shipped default model")."""
    from training.eval_world import ExpertPolicy, bundle_policy, evaluate, random_policy

    torch.manual_seed(0)
    kw = dict(suite="builtin_all", per_task=10, progress=False)
    model = evaluate(bundle_policy(shipped), views=tuple(shipped.views), name="model",
                     execute=shipped.metadata["execute"], gripper_hold=shipped.metadata["gripper_hold"], **kw)
    expert = evaluate(ExpertPolicy(), name="expert", **kw)
    rand = evaluate(random_policy(0), name="random", **kw)
    assert expert["successes"] == 110
    assert rand["successes"] <= 2
    # well below the measured 93 for other CPUs' rounding (it flips a few chaotic episodes either way)
    assert model["successes"] >= 0.7 * expert["successes"], model["per_task"]
