"""Checkpoint safety, the project's format, and the convert/inspect/init commands."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from amplify import AMPLIFY, CheckpointError, load_motion_tokenizer
from amplify.checkpoints import load_original
from amplify_cli.main import main as cli

MARKER = Path("/tmp/amplify_pickle_payload_ran")


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __reduce__(self):
        return (open, (str(MARKER), "w"))


def test_pickled_payload_is_refused_and_never_runs(tmp_path):
    MARKER.unlink(missing_ok=True)
    bad = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "config": {"x": _Payload()}}, bad)
    with pytest.raises(CheckpointError, match="refused"):
        load_original(bad)
    with pytest.raises(CheckpointError, match="refused"):
        load_motion_tokenizer(bad)
    with pytest.raises(CheckpointError, match="refused"):
        AMPLIFY.load(bad)
    assert not MARKER.exists(), "the pickled payload ran"


def test_plain_pickle_is_refused(tmp_path):
    bad = tmp_path / "plain.pt"
    with open(bad, "wb") as f:
        pickle.dump({"model": {}, "config": {"f": _Payload()}}, f)
    with pytest.raises(CheckpointError):
        load_original(bad)
    assert not MARKER.exists()


def test_missing_truncated_and_mismatched_files(tmp_path, small_fixture):
    d = small_fixture[0]
    with pytest.raises(CheckpointError, match="no such"):
        AMPLIFY.load(tmp_path / "nope.pt")
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes((d / "mt.pt").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_motion_tokenizer(trunc)
    # a bundle directory whose weights do not fit its config
    model = AMPLIFY.load(d / "amplify.pt")
    model.save(tmp_path / "b")
    doc = json.loads((tmp_path / "b" / "config.json").read_text())
    doc["config"]["inverse_dynamics"]["num_layers"] = 3
    (tmp_path / "b" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="do not fit"):
        AMPLIFY.load(tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="safetensors"):
        AMPLIFY.load(tmp_path / "b")
    # an FD checkpoint is not a bundle
    with pytest.raises(CheckpointError):
        AMPLIFY.load(d / "fd.pt")


def test_assembled_bundle_requires_local_vision_weights(small_fixture):
    d = small_fixture[0]
    with pytest.raises(CheckpointError, match="vision"):
        AMPLIFY.from_parts(d / "mt.pt", d / "fd.pt", d / "id.pt")


def test_project_format_round_trip_keeps_instructions(tmp_path, small_bundle):
    small_bundle.set_instructions(["a", "b"], torch.randn(2, 512))
    small_bundle.save(tmp_path / "b", {"name": "t"})
    loaded = AMPLIFY.load(tmp_path / "b")
    assert loaded.instructions == ["a", "b"]
    torch.testing.assert_close(loaded.text_table, small_bundle.text_table)
    assert loaded.metadata["name"] == "t"
    images, proprio, text = torch.rand(1, 2, 32, 32, 3), torch.zeros(1, 9), torch.randn(1, 512)
    torch.testing.assert_close(loaded.act(images, proprio, text_emb=text), small_bundle.act(images, proprio, text_emb=text))
    assert not any(p.suffix in (".pt", ".pkl") for p in (tmp_path / "b").iterdir())


def test_int8_kernels_load_back_as_their_dequantized_float32(tmp_path, small_bundle):
    """``save(int8_prefixes=...)`` stores those 4-D kernels as per-channel int8 + float16 scales; loading returns
    ``q * scale`` in float32, within half a step of the original; a scale without its int8 tensor is refused."""
    from safetensors.torch import load_file, save_file

    from amplify.checkpoints import CheckpointError, quantize_int8

    small_bundle.save(tmp_path / "b", int8_prefixes=("img_encoder.",))
    stored = load_file(str(tmp_path / "b" / "model.safetensors"))
    kernels = [k for k, v in small_bundle.state_dict().items() if k.startswith("img_encoder.") and v.dim() == 4]
    assert kernels and all(stored[k].dtype == torch.int8 for k in kernels)
    loaded = AMPLIFY.load(tmp_path / "b").state_dict()
    for k in kernels:
        w = small_bundle.state_dict()[k]
        q, scale = quantize_int8(w)
        assert loaded[k].dtype == torch.float32 and torch.equal(loaded[k], q.float() * scale.float())
        assert (loaded[k] - w).abs().max() <= scale.float().max() / 2 + 1e-6
    stored[kernels[0]] = stored[kernels[0]].float()
    save_file(stored, str(tmp_path / "b" / "model.safetensors"))
    with pytest.raises(CheckpointError, match="int8_scale"):
        AMPLIFY.load(tmp_path / "b")


def test_cli_convert_inspect_init(tmp_path, small_fixture, capsys):
    d = small_fixture[0]
    assert cli(["convert", str(d / "mt.pt"), "--out", str(tmp_path / "mt")]) == 0
    assert cli(["convert", str(d / "id.pt"), "--mt", str(d / "mt.pt"), "--out", str(tmp_path / "id")]) == 0
    assert cli(["inspect", str(tmp_path / "mt"), "--json"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"):])
    assert summary["kind"] == "motion_tokenizer" and summary["total_parameters"] == 227715
    assert cli(["inspect", str(d / "amplify.pt")]) == 0
    assert "img_encoder" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="need their tokenizer"):
        cli(["convert", str(d / "fd.pt"), "--out", str(tmp_path / "fd")])
    assert cli(["init", "--preset", "small", "--out", str(tmp_path / "rand"), "forward_dynamics.num_layers=1"]) == 0
    assert AMPLIFY.load(tmp_path / "rand").cfg.forward_dynamics.num_layers == 1


def test_console_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "amplify", "--help"], capture_output=True, text=True, check=True)
    assert "convert" in r.stdout and "inspect" in r.stdout
