"""Every endpoint, in JSON and msgpack, gives the numbers of the reference fixture (the original
code's outputs) and of calling the model directly."""
from __future__ import annotations

import re

import numpy as np
import pytest

from amplify import AMPLIFY
from amplify.tracks import velocities_to_points
from tests.service.live import post, result

ENCODINGS = ["json", "msgpack"]


@pytest.fixture(scope="module")
def direct(small_data):
    return AMPLIFY.load(small_data[0])


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_encode_tracks_and_velocities(fixture_server, small_data, encoding):
    _, inp, exp = small_data
    out = result(post(fixture_server.client, "/encode", {"tracks": inp["tracks"], "return_codes": True}, encoding))
    np.testing.assert_array_equal(out["indices"], exp["mt_indices"])
    np.testing.assert_allclose(out["codes"], exp["mt_codes"], atol=1e-5)
    vel = np.diff(inp["tracks"], axis=2)
    out = result(post(fixture_server.client, "/encode", {"velocities": vel}, encoding))
    np.testing.assert_array_equal(out["indices"], exp["mt_indices"])
    assert "codes" not in out


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_decode_indices_and_codes(fixture_server, small_data, encoding):
    _, inp, exp = small_data
    init = inp["tracks"][:, :, 0]
    out = result(post(fixture_server.client, "/decode",
                      {"indices": exp["mt_indices"], "init_points": init, "return_logits": True}, encoding))
    np.testing.assert_allclose(out["velocities"], exp["mt_x_recon"], atol=1e-6)
    np.testing.assert_allclose(out["logits"], exp["mt_rel_logits"], atol=1e-4)
    expected_tracks = velocities_to_points(exp["mt_x_recon"], time_dim=2, init_points=init[:, :, None])
    np.testing.assert_allclose(out["tracks"], expected_tracks, atol=1e-5)
    out = result(post(fixture_server.client, "/decode", {"codes": exp["mt_codes"]}, encoding))
    np.testing.assert_allclose(out["velocities"], exp["mt_x_recon"], atol=1e-6)
    assert set(out) == {"velocities"}


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_predict_codes(fixture_server, small_data, encoding):
    _, inp, exp = small_data
    out = result(post(fixture_server.client, "/predict_codes",
                      {"images": inp["images"], "text_emb": inp["text_emb"], "return_codes": True}, encoding))
    np.testing.assert_array_equal(out["indices"], exp["amp_pred_indices"])
    np.testing.assert_allclose(out["codes"], exp["amp_pred_codes"], atol=1e-6)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_predict_traj(fixture_server, small_data, encoding):
    _, inp, exp = small_data
    out = result(post(fixture_server.client, "/predict_traj",
                      {"images": inp["images"], "text_emb": inp["text_emb"], "init_points": inp["init_queries"][:, :, 0]},
                      encoding))
    np.testing.assert_allclose(out["tracks"], exp["amp_pred_traj"], atol=1e-5)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_act(fixture_server, small_data, encoding):
    _, inp, exp = small_data
    r = post(fixture_server.client, "/act", {"images": inp["images"], "proprio": inp["proprio"], "text_emb": inp["text_emb"]},
             encoding)
    assert r.headers["content-type"].startswith("application/json" if encoding == "json" else "application/msgpack")
    out = result(r)
    assert out["actions"].shape == (2, 16, 7)
    np.testing.assert_allclose(out["actions"], exp["amp_actions"], atol=1e-4)


def test_uint8_images_match_the_model(fixture_server, small_data, direct):
    _, inp, _ = small_data
    images = (inp["images"] * 255).round().astype(np.uint8)
    expected = direct.act(images, inp["proprio"], text_emb=inp["text_emb"]).numpy()
    for enc in ENCODINGS:  # JSON integers are read as 0-255 too
        out = result(post(fixture_server.client, "/act", {"images": images, "proprio": inp["proprio"],
                                                          "text_emb": inp["text_emb"]}, enc))
        np.testing.assert_allclose(out["actions"], expected, atol=1e-5)


def test_other_image_sizes_are_resized(fixture_server, small_data, direct):
    _, inp, _ = small_data
    images = np.random.default_rng(0).random((1, 2, 96, 80, 3), dtype=np.float32)
    expected = direct.act(images, inp["proprio"][:1], text_emb=inp["text_emb"][:1]).numpy()
    out = result(post(fixture_server.client, "/act", {"images": images, "proprio": inp["proprio"][:1],
                                                      "text_emb": inp["text_emb"][:1]}, "msgpack"))
    np.testing.assert_allclose(out["actions"], expected, atol=1e-5)


def test_accept_header_chooses_the_response_encoding(fixture_server, small_data):
    _, inp, exp = small_data
    r = post(fixture_server.client, "/encode", {"tracks": inp["tracks"]}, "json", headers={"accept": "application/msgpack"})
    assert r.headers["content-type"] == "application/msgpack"
    np.testing.assert_array_equal(result(r)["indices"], exp["mt_indices"])


def test_float64_and_float16_msgpack_arrays_are_converted(fixture_server, small_data):
    _, inp, exp = small_data
    for dt in (np.float64, np.float16):
        out = result(post(fixture_server.client, "/encode", {"tracks": inp["tracks"].astype(dt)}, "msgpack"))
        if dt == np.float64:
            np.testing.assert_array_equal(out["indices"], exp["mt_indices"])
        assert out["indices"].shape == (3, 15) and out["indices"].dtype == np.int64


def test_ops_endpoints_and_headers(fixture_server):
    c = fixture_server.client
    assert c.get("/health").json()["status"] == "ok"
    assert c.get("/ready").status_code == 200
    meta = c.get("/metadata").json()
    assert meta["model"]["format"] == "original" and meta["backend"] == "torch" and meta["trained"] is True
    assert meta["views"] == ["agentview", "eye_in_hand"]
    assert (meta["track_horizon"], meta["num_tracks"], meta["code_length"], meta["hidden_dim"]) == (16, 16, 15, 64)
    assert (meta["codebook_size"], meta["fsq_levels"], meta["action_horizon"], meta["action_dim"]) == (64, [8, 8], 16, 7)
    assert (meta["proprio_dim"], meta["text_embedding_dim"], meta["image_size"]) == (9, 512, [128, 128])
    assert meta["batching"] == {"max_batch_size": 16, "max_wait_ms": 20.0}
    r = c.get("/metadata", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert r.headers["server-timing"].startswith("model;dur=")
    r = c.post("/encode", json={"velocities": np.zeros((1, 2, 15, 16, 2)).tolist()})
    assert len(r.headers["x-request-id"]) == 32
    assert float(r.headers["server-timing"].split(";dur=")[1].split(",")[0]) > 0  # the model time
    assert re.search(r"queue;dur=[0-9.]+, resume;dur=[0-9.]+, total;dur=", r.headers["server-timing"])
    metrics = c.get("/metrics").text
    for name in ("amplify_requests_total", "amplify_request_duration_seconds", "amplify_queue_seconds",
                 "amplify_batch_size", "amplify_requests_in_flight"):
        assert name in metrics
    assert 'amplify_requests_total{endpoint="/encode",method="POST",status="200"}' in metrics
    spec = c.get("/openapi.json").json()
    assert set(spec["paths"]) >= {"/encode", "/decode", "/predict_codes", "/predict_traj", "/act", "/health",
                                  "/ready", "/metadata", "/metrics"}
    content = spec["paths"]["/act"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "application/msgpack"}
    assert "proprio" in content["application/json"]["schema"]["properties"]
    assert c.get("/docs").status_code == 200
