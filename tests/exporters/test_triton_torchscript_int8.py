"""Triton repository layout, TorchScript without the project's code, int8 variants, provider choice."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from exporters.runtime import OnnxModel, load_exported, select_providers


def _parse_pbtxt(text: str) -> dict:
    """Just enough of Triton's text format for the configs the exporter writes."""
    tensors = lambda block: [  # noqa: E731
        {"name": n, "data_type": t, "dims": [int(d) for d in dims.split(",")]}
        for n, t, dims in re.findall(r'name: "(\w+)"\s+data_type: (\w+)\s+dims: \[ ([-\d, ]+) \]', block)
    ]
    return {
        "name": re.search(r'^name: "(\w+)"', text, re.M).group(1),
        "platform": re.search(r'^platform: "(\w+)"', text, re.M).group(1),
        "max_batch_size": int(re.search(r"^max_batch_size: (\d+)", text, re.M).group(1)),
        "input": tensors(text.split("input [")[1].split("output [")[0]),
        "output": tensors(text.split("output [")[1].split("dynamic_batching")[0]),
        "queue_delay": int(re.search(r"max_queue_delay_microseconds: (\d+)", text).group(1)),
    }


def test_triton_layout(exports):
    import onnx

    out, manifest = exports.get("random_small", "triton")
    models = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert models == sorted([f"amplify_{g}" for g in manifest["graphs"]] + [f"amplify_{g}_int8" for g in manifest["graphs"]])
    dtypes = {"float32": "TYPE_FP32", "int64": "TYPE_INT64"}
    entries = [(g, e) for g, e in manifest["graphs"].items()] + [(g + "_int8", e["int8"]) for g, e in manifest["graphs"].items()]
    for graph, entry in entries:
        model_dir = out / f"amplify_{graph}"
        assert entry["file"] == f"amplify_{graph}/1/model.onnx" and entry["triton_model"] == model_dir.name
        assert sorted(p.name for p in model_dir.iterdir()) == ["1", "config.pbtxt"]
        cfg = _parse_pbtxt((model_dir / "config.pbtxt").read_text())
        assert (cfg["name"], cfg["platform"], cfg["max_batch_size"], cfg["queue_delay"]) == (
            model_dir.name, "onnxruntime_onnx", 32, 2000)
        graph_proto = onnx.load(str(model_dir / "1" / "model.onnx")).graph
        for kind, onnx_tensors in (("input", graph_proto.input), ("output", graph_proto.output)):
            want = [{"name": t.name,
                     "data_type": dtypes[onnx.helper.tensor_dtype_to_np_dtype(t.type.tensor_type.elem_type).name],
                     "dims": [d.dim_value if d.HasField("dim_value") else -1 for d in t.type.tensor_type.shape.dim[1:]]}
                    for t in onnx_tensors]
            assert cfg[kind] == want, (graph, kind)
            assert all(t.type.tensor_type.shape.dim[0].dim_param == "batch" for t in onnx_tensors)
    # the repository is also a runnable export
    model = load_exported(out, threads=1)
    assert isinstance(model, OnnxModel) and model.instructions


def test_torchscript_loads_without_project_code(exports, tmp_path):
    """torch.jit.load and run every graph in a fresh interpreter whose path and cwd exclude the repo."""
    out, manifest = exports.get("random_small", "torchscript")
    model = load_exported(out, threads=1)
    rng = np.random.default_rng(5)
    feeds, expected = {}, {}
    for graph, g in manifest["graphs"].items():
        feed = {}
        h, w = manifest["metadata"]["image_size"]
        for t in g["inputs"]:
            shape = [2, *({"height": h, "width": w}.get(d, d) for d in t["shape"][1:])]
            feed[t["name"]] = (rng.integers(0, manifest["metadata"]["codebook_size"], shape) if t["dtype"] == "int64"
                               else rng.uniform(0, 1, shape).astype(np.float32))
        feeds[graph] = feed
        expected[graph] = model.run(graph, **feed)
        np.savez(tmp_path / f"in_{graph}.npz", **feed)
    script = tmp_path / "run_ts.py"
    script.write_text(
        "import json, sys\n"
        "import numpy as np, torch\n"
        "torch.set_num_threads(1)\n"
        "sys.modules['amplify'] = sys.modules['exporters'] = None  # importing either now fails, even if installed\n"
        "d, work = sys.argv[1], sys.argv[2]\n"
        "m = json.load(open(d + '/manifest.json'))\n"
        "for name, g in m['graphs'].items():\n"
        "    mod = torch.jit.load(d + '/' + g['file'])\n"
        "    feed = np.load(f'{work}/in_{name}.npz')\n"
        "    with torch.no_grad():\n"
        "        out = mod(*[torch.from_numpy(feed[t['name']]) for t in g['inputs']])\n"
        "    out = out if isinstance(out, tuple) else (out,)\n"
        "    np.savez(f'{work}/out_{name}.npz', **{t['name']: o.numpy() for t, o in zip(g['outputs'], out)})\n"
        "print('ok', len(m['graphs']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the repo is not on the path
    res = subprocess.run([sys.executable, str(script), str(out), str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == f"ok {len(manifest['graphs'])}"
    for graph in manifest["graphs"]:
        got = np.load(tmp_path / f"out_{graph}.npz")
        for name, ref in expected[graph].items():
            np.testing.assert_array_equal(got[name], ref)


def test_int8_variant(exports):
    """int8 graphs are written, run, and the manifest's measured differences are the real ones."""
    from exporters.parity import sample_inputs
    from exporters.quantize import differences
    from exporters.source import load_source

    out, manifest = exports.get("random_small", "triton")
    rep = manifest["int8"]["graphs"]
    assert set(rep) == set(manifest["graphs"])
    for graph in rep:
        assert (out / manifest["graphs"][graph]["int8"]["file"]).is_file()
        assert rep[graph]["latency_ms"]["float32"] > 0 and rep[graph]["latency_ms"]["int8"] > 0
    assert rep["act"]["bytes"]["int8"] < rep["act"]["bytes"]["float32"]
    f32, i8 = OnnxModel(out, threads=1), OnnxModel(out, precision="int8", threads=1)
    src = load_source(manifest["model"]["source"])
    feed = {k: v.numpy() for k, v in sample_inputs(src, ("images", "text_emb", "proprio"), 3, 0).items()}
    measured = differences(f32.run("act", **feed), i8.run("act", **feed))
    recorded = rep["act"]["differences_from_float32"]["3"]
    assert recorded["indices"]["fraction_equal"] == measured["indices"]["fraction_equal"]
    assert np.isclose(recorded["actions"]["max_abs_diff"], measured["actions"]["max_abs_diff"], rtol=1e-5, atol=1e-7)
    actions = i8.act(feed["images"], feed["proprio"], text_emb=feed["text_emb"])
    assert actions.shape == (3, 16, 7) and np.isfinite(actions).all()
    with pytest.raises(Exception, match="no int8 variant"):
        OnnxModel(exports.get("random_mt", "onnx")[0], precision="int8")


def test_provider_selection():
    cpu_only, with_cuda = ["CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers("cpu", with_cuda) == cpu_only
    assert select_providers("cuda", with_cuda) == with_cuda
    assert select_providers("cuda:1", with_cuda) == with_cuda
    assert select_providers("auto", with_cuda) == with_cuda
    assert select_providers("auto", cpu_only) == cpu_only
    with pytest.raises(RuntimeError, match="no CUDAExecutionProvider.*onnxruntime-gpu"):
        select_providers("cuda", cpu_only)
    with pytest.raises(ValueError, match="device must be"):
        select_providers("tpu", cpu_only)
    assert select_providers("cpu") == cpu_only  # the real list of this install
