"""Exports that must fail, and fail clearly: bad checkpoints, bad settings, parity mismatches."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from amplify_cli.main import main


def _export(capsys, *args) -> tuple[int, str]:
    rc = main(["export", *args])
    return rc, capsys.readouterr().err


def test_garbage_checkpoint(tmp_path, capsys):
    bad = tmp_path / "amplify.pt"
    bad.write_bytes(b"this is not a checkpoint" * 10)
    rc, err = _export(capsys, "--model", str(bad), "--out", str(tmp_path / "out"))
    assert rc == 2 and "not a readable checkpoint" in err and str(bad) in err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_missing_checkpoint(tmp_path, capsys):
    rc, err = _export(capsys, "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert rc == 2 and "no such file or directory" in err


def test_mismatched_checkpoint(tmp_path, random_small_dir, capsys):
    """A config that does not describe the weights: the error names the keys and shapes."""
    broken = tmp_path / "broken"
    shutil.copytree(random_small_dir, broken)
    doc = json.loads((broken / "config.json").read_text())
    doc["config"]["inverse_dynamics"]["proprio_dim"] = 12
    (broken / "config.json").write_text(json.dumps(doc))
    rc, err = _export(capsys, "--model", str(broken), "--out", str(tmp_path / "out"))
    assert rc == 2 and "weights do not fit" in err and "proprio_proj.weight" in err


def test_standalone_fd_refused(tmp_path, small_fixture, capsys):
    rc, err = _export(capsys, "--model", str(small_fixture[0] / "fd.pt"), "--out", str(tmp_path / "out"))
    assert rc == 2 and "forward_dynamics model alone; export a bundle" in err


def test_bad_settings(tmp_path, random_small_dir, capsys):
    rc, err = _export(capsys, "--model", str(random_small_dir), "--out", str(tmp_path / "o"), "--graphs", "act,fly")
    assert rc == 2 and "unknown graphs ['fly']" in err
    rc, err = _export(capsys, "--format", "torchscript", "--int8", "--model", str(random_small_dir), "--out", str(tmp_path / "o"))
    assert rc == 2 and "int8 is for ONNX" in err
    rc, err = _export(capsys, "--model", str(random_small_dir), "--out", str(tmp_path / "o"), "atoll=1")
    assert rc == 2 and "unknown config key 'atoll'" in err


def test_tokenizer_has_no_bundle_graphs(tmp_path, random_mt_dir, capsys):
    rc, err = _export(capsys, "--model", str(random_mt_dir), "--out", str(tmp_path / "o"), "--graphs", "act")
    assert rc == 2 and "a motion_tokenizer has no ['act'] graphs" in err


def test_parity_failure_is_reported(tmp_path, random_mt_dir, monkeypatch, capsys):
    """A graph that differs from PyTorch fails the export with where it differs, and writes no manifest."""
    import exporters.export as export_mod

    real = export_mod.reference_outputs

    def shifted(source, graph, inputs):
        out = real(source, graph, inputs)
        if graph == "decode":
            out["logits"] = out["logits"].copy()
            out["logits"][0, 3, 7] += 1e-3  # one logit off by 1e-3
        return out

    monkeypatch.setattr(export_mod, "reference_outputs", shifted)
    out = tmp_path / "o"
    rc, err = _export(capsys, "--model", str(random_mt_dir), "--out", str(out))
    assert rc == 1
    assert "graph 'decode' output 'logits' at batch 1" in err and "1 of" in err and "[0, 3, 7]" in err
    assert not (out / "manifest.json").exists()
    report = json.loads((out / "parity_report.json").read_text())
    assert not report["passed"]
    f = report["failures"][0]
    assert (f["graph"], f["output"], f["positions"][0]) == ("decode", "logits", [0, 3, 7])
    assert np.isclose(f["max_abs_diff"], 1e-3, rtol=1e-2)


def test_sampling_head_with_noise_refused():
    """A diffusion/flow head that starts from seeded or fresh noise cannot be traced faithfully."""
    import copy

    import torch

    from amplify import AMPLIFY
    from amplify.presets import small
    from exporters.graphs import build_graph

    torch.manual_seed(0)
    policy = AMPLIFY(small()).eval()
    cfg = copy.deepcopy(policy.cfg)
    cfg.inverse_dynamics.head = "diffusion"
    cfg.inverse_dynamics.sample_noise = "random"
    policy.cfg = cfg
    for graph in ("act", "inverse_dynamics", "act_topk"):
        with pytest.raises(ValueError, match="diffusion action head starts sampling from 'random' noise"):
            build_graph(graph, policy)
    build_graph("predict_codes", policy)  # graphs without the action head still build


def test_cli_subprocess_end_to_end(tmp_path, random_mt_dir, exports):
    """The real command line: `python -m amplify export ...` writes a loadable export and says so."""
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "mt_onnx"
    res = subprocess.run([sys.executable, "-m", "amplify", "export", "--format", "onnx", "--model",
                          str(random_mt_dir), "--out", str(out), "threads=1"],
                         cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "wrote 3 graphs" in res.stdout and "parity passed" in res.stdout
    from exporters.runtime import load_exported

    reference = load_exported(exports.get("random_mt", "onnx")[0], threads=1)
    tracks = np.random.default_rng(1).uniform(-1, 1, (2, 2, 16, 16, 2)).astype(np.float32)
    np.testing.assert_array_equal(load_exported(out, threads=1).encode(tracks=tracks)[0], reference.encode(tracks=tracks)[0])


def test_pickled_code_refused(tmp_path, capsys):
    """A checkpoint carrying a pickled callable is refused before anything is unpickled."""
    import torch

    evil = tmp_path / "amplify.pt"
    torch.save({"model": {}, "config": {"motion_tokenizer_cfg": {}}, "hook": print}, evil)
    rc, err = _export(capsys, "--model", str(evil), "--out", str(tmp_path / "out"))
    assert rc == 2 and "refused" in err and "never unpickled" in err
