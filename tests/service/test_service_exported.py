"""The ONNX Runtime and TorchScript back ends on `amplify export` directories of the fixture bundle:
every endpoint gives the reference numbers; top-k is refused with a clear 400."""
from __future__ import annotations


import numpy as np
import pytest

from service.backends.exported import REQUIRED_GRAPHS
from tests.service.live import live_server, post, result


@pytest.fixture(scope="module", params=["onnx", "torchscript"])
def exported_server(request, small_data, tmp_path_factory):
    pytest.importorskip("exporters.export", reason="the exporters package (branch export) is not present")
    from exporters.export import ExportSettings, export_model
    from exporters.source import load_source

    fmt = request.param
    out = tmp_path_factory.mktemp(f"export_{fmt}")
    export_model(load_source(small_data[0]), out, ExportSettings(format=fmt, graphs=list(REQUIRED_GRAPHS), batch_sizes=[2]))
    with live_server(model=str(out), backend=fmt, max_wait_ms=10) as server:
        yield fmt, server


def test_every_endpoint_matches_the_reference(exported_server, small_data):
    fmt, server = exported_server
    _, inp, exp = small_data
    c = server.client
    meta = c.get("/metadata").json()
    assert meta["backend"] == fmt and meta["model"]["format"] == f"amplify-export/{fmt}"
    assert meta["sampling"] == ["argmax"] and meta["code_length"] == 15

    out = result(post(c, "/act", {"images": inp["images"], "proprio": inp["proprio"], "text_emb": inp["text_emb"]}, "msgpack"))
    np.testing.assert_allclose(out["actions"], exp["amp_actions"], atol=1e-4)
    out = result(post(c, "/predict_codes", {"images": inp["images"], "text_emb": inp["text_emb"], "return_codes": True}, "json"))
    np.testing.assert_array_equal(out["indices"], exp["amp_pred_indices"])
    np.testing.assert_allclose(out["codes"], exp["amp_pred_codes"], atol=1e-6)
    out = result(post(c, "/predict_traj", {"images": inp["images"], "text_emb": inp["text_emb"],
                                           "init_points": inp["init_queries"][:, :, 0]}, "msgpack"))
    np.testing.assert_allclose(out["tracks"], exp["amp_pred_traj"], atol=1e-5)
    out = result(post(c, "/encode", {"tracks": inp["tracks"], "return_codes": True}, "msgpack"))
    np.testing.assert_array_equal(out["indices"], exp["mt_indices"])
    np.testing.assert_allclose(out["codes"], exp["mt_codes"], atol=1e-5)
    out = result(post(c, "/decode", {"indices": exp["mt_indices"], "return_logits": True}, "msgpack"))
    np.testing.assert_allclose(out["velocities"], exp["mt_x_recon"], atol=1e-6)
    np.testing.assert_allclose(out["logits"], exp["mt_rel_logits"], atol=1e-4)


def test_other_image_sizes_and_batching(exported_server, small_data):
    _, server = exported_server
    _, inp, _ = small_data
    images = np.random.default_rng(0).integers(0, 256, (3, 2, 64, 96, 3), dtype=np.uint8)
    body = {"images": images, "proprio": np.zeros((3, 9), np.float32), "text_emb": np.zeros((3, 512), np.float32)}
    out = result(post(server.client, "/act", body, "msgpack"))
    assert out["actions"].shape == (3, 16, 7) and np.isfinite(out["actions"]).all()


def test_topk_is_refused(exported_server, small_data):
    _, server = exported_server
    _, inp, _ = small_data
    r = post(server.client, "/predict_codes", {"images": inp["images"][:1], "text_emb": inp["text_emb"][:1],
                                               "sampling": "topk", "seed": 1}, "msgpack")
    assert r.status_code == 400 and r.json()["error"]["field"] == "sampling"
    assert "torch" in r.json()["error"]["message"]


def test_backend_and_model_must_agree(small_data, tmp_path):
    from service.backends import load_backend

    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_backend("onnx", str(small_data[0]))
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(ValueError, match="torchscript or onnx"):
        load_backend("torch", str(tmp_path))


def test_kserve_v2_on_the_exported_back_end(exported_server, small_data):
    """v2's amplify_act on an export gives the reference actions and the act graph's own indices."""
    from clients import V2Client

    _, server = exported_server
    _, inp, exp = small_data
    with V2Client(server.url) as c:
        out = c.infer("amplify_act", {"images": np.asarray(inp["images"], np.float32),
                                      "text_emb": np.asarray(inp["text_emb"], np.float32),
                                      "proprio": np.asarray(inp["proprio"], np.float32)})
        np.testing.assert_allclose(out["actions"], exp["amp_actions"], atol=1e-4)
        np.testing.assert_array_equal(out["indices"], exp["amp_pred_indices"])
        assert server.client.get("/v2/models/amplify_inverse_dynamics").status_code == 404  # not exported here
