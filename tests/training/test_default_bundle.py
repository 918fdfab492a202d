"""``amplify build-default``'s vision settings reach the pretraining: a quick build with a few vision steps and
``--set vision.head=spatial --set vision.levels=[1,2]`` pretrains the trunk with that state head and bundles a model."""
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from training.default_bundle import build_default


def test_quick_build_pretrains_the_vision_head_it_is_set_to(tmp_path: Path):
    torch.set_num_threads(1)
    sets = ["vision.steps=2", "vision.scenes=4", "vision.batch_size=4", "vision.head=spatial", "vision.levels=[1,2]"]
    report = build_default(tmp_path / "out", tmp_path / "work", quick=True, sets=sets, workers=1, progress=False)
    vision = tmp_path / "work" / "runs" / "vision" / "vision.safetensors"
    with safe_open(str(vision), "pt") as f:
        head = json.loads(f.metadata()["state_head"])
    assert head["kind"] == "spatial" and list(head["levels"]) == [1, 2]
    assert report["vision"]["steps"] == 2 and "head_error" in report["vision"]
    assert (tmp_path / "out" / "config.json").is_file() and report["seconds"]["total"] > 0


def test_build_passes_the_dart_settings_to_the_demonstrations(tmp_path: Path, monkeypatch):
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
    assert seen["dart"] == 0.0 and seen["dart_tracks"] == "executed"  # the recipe: plain demonstrations
