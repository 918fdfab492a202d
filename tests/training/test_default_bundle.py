"""``amplify build-default``'s vision settings reach the pretraining: a quick build with a few vision steps and
``--set vision.head=spatial --set vision.levels=[1,2]`` pretrains the trunk with that state head and bundles a model."""
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from training.default_bundle import build_default


@pytest.fixture(scope="module")
def quick_build(tmp_path_factory) -> tuple[Path, dict]:
    """A quick build with a few vision steps and the spatial head (the directory, the build's report)."""
    torch.set_num_threads(1)
    tmp_path = tmp_path_factory.mktemp("quick_build")
    sets = ["vision.steps=2", "vision.scenes=4", "vision.batch_size=4", "vision.head=spatial", "vision.levels=[1,2]"]
    return tmp_path, build_default(tmp_path / "out", tmp_path / "work", quick=True, sets=sets, workers=1, progress=False)


def test_quick_build_pretrains_the_vision_head_it_is_set_to(quick_build: tuple[Path, dict]):
    tmp_path, report = quick_build
    vision = tmp_path / "work" / "runs" / "vision" / "vision.safetensors"
    with safe_open(str(vision), "pt") as f:
        head = json.loads(f.metadata()["state_head"])
    assert head["kind"] == "spatial" and list(head["levels"]) == [1, 2]
    assert report["vision"]["steps"] == 2 and "head_error" in report["vision"]
    assert (tmp_path / "out" / "config.json").is_file() and report["seconds"]["total"] > 0


def test_the_bundle_records_the_chunk_length_its_recipe_runs(quick_build: tuple[Path, dict]):
    from amplify.policy import AMPLIFY
    from training.default_bundle import EXECUTE, GRIPPER_HOLD

    meta = AMPLIFY.load(quick_build[0] / "out").metadata
    assert meta["execute"] == EXECUTE == 1  # eval-world's default for it
    assert meta["gripper_hold"] == GRIPPER_HOLD == 4  # and the sticky gripper it applies


def test_build_evaluation_runs_the_model_with_the_chunk_length_it_is_given(quick_build: tuple[Path, dict], monkeypatch):
    """``--eval-execute`` reaches the model's closed loop (not the expert's) and is recorded in the metadata."""
    import training.eval_world as eval_world
    from amplify.policy import AMPLIFY
    from training.default_bundle import evaluate_default

    tmp_path = quick_build[0]
    calls, holds = {}, {}

    def record(policy, name: str, execute: int = 8, gripper_hold: int = 0, **kwargs) -> dict:
        calls[name] = execute
        holds[name] = gripper_hold
        return {"success_rate": 0.0, "per_family": {}, "per_task": {}}

    monkeypatch.setattr(eval_world, "evaluate", record)
    monkeypatch.setattr(eval_world, "format_report", lambda results: "table")
    summary = evaluate_default(tmp_path / "out", 1, progress=False, execute=1, gripper_hold=3)
    assert calls == {"model": 1, "expert": 8, "random": 8}
    assert holds == {"model": 3, "expert": 0, "random": 0}  # the latch is the model's only
    assert summary["execute"] == 1 and summary["command"].endswith("--execute 1 --gripper-hold 3")
    evaluation = AMPLIFY.load(tmp_path / "out").metadata["evaluation"]
    assert evaluation["execute"] == 1 and evaluation["gripper_hold"] == 3


def test_build_passes_the_data_settings_to_the_demonstrations(tmp_path: Path, monkeypatch):
    import world.generate

    seen = {}

    class Stop(Exception):
        pass

    def record(*args, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(world.generate, "generate", record)
    with pytest.raises(Stop):
        build_default(tmp_path / "out", tmp_path / "work", quick=True, workers=1, progress=False,
                      sets=["data.dart=0.3", "data.dart_tracks=expert"])
    assert seen["dart"] == 0.3 and seen["dart_tracks"] == "expert"
    seen.clear()
    with pytest.raises(Stop):
        build_default(tmp_path / "out", tmp_path / "work", quick=True, workers=1, progress=False)
    assert seen["dart"] == 0.3 and seen["dart_tracks"] == "expert" and seen["distractor_starts"] == 0.33  # the recipe
    seen.clear()
    with pytest.raises(Stop):
        build_default(tmp_path / "out", tmp_path / "work", quick=True, workers=1, progress=False, sets=["data.dart=0"])
    assert seen["dart"] == 0.0


def test_ship_writes_float16_weights_evaluated_as_stored_and_no_build_paths(quick_build: tuple[Path, dict], monkeypatch,
                                                                            tmp_path):
    """``python -m training.ship_default``: the evaluation runs the rounded weights the file stores, the metadata
    keeps the build's record without its machine's paths, and says where the bundle came from."""
    import training.eval_world as eval_world
    from amplify.checkpoints import file_sha256
    from amplify.policy import AMPLIFY
    from training.ship_default import SHIPPED_NAME, ship

    build = quick_build[0] / "out"
    evaluated = {}

    def capture(model):
        evaluated.update({k: v.clone() for k, v in model.state_dict().items()})
        return lambda images, proprio, instructions: None

    def record(policy, name: str, **kwargs) -> dict:
        return {"success_rate": 1.0 if name != "random" else 0.0, "per_family": {}, "per_task": {}}

    monkeypatch.setattr(eval_world, "bundle_policy", capture)
    monkeypatch.setattr(eval_world, "evaluate", record)
    monkeypatch.setattr(eval_world, "format_report", lambda results: "table")
    ship(build, tmp_path / "shipped", per_task=1, progress=False)

    with safe_open(str(tmp_path / "shipped" / "model.safetensors"), "pt") as f:
        assert f.get_tensor("motion_tokenizer.encoder.encoder.transformer.h.0.attn.c_attn.weight").dtype == torch.float16
        assert f.get_tensor("img_encoder.model.7.0.conv1.weight").dtype == torch.int8  # the trunk's last stages
    shipped = AMPLIFY.load(tmp_path / "shipped")
    assert all(torch.equal(v, evaluated[k]) for k, v in shipped.state_dict().items())  # evaluated what it stores
    meta = shipped.metadata
    assert meta["name"] == SHIPPED_NAME and meta["shipped"]["build_weights_sha256"] == file_sha256(build / "model.safetensors")
    assert meta["evaluation"]["command"].startswith("amplify eval-world --model amplify/default_model --per-task 1")
    assert meta["build_report"]["recipe"] == AMPLIFY.load(build).metadata["build_report"]["recipe"]
    config = (tmp_path / "shipped" / "config.json").read_text()
    assert str(quick_build[0] / "work") not in config and '"<work>/runs/mt/latest"' in config
