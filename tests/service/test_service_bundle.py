"""A random bundle in the project's format: instructions by text, numbers equal to direct calls;
the text-encoder check; the untrained default."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from amplify import AMPLIFY
from service.settings import ServiceSettings
from service.text import LocalTextEncoder, TextEncoderError
from tests.service.conftest import INSTRUCTIONS
from tests.service.live import live_server, post, result


@pytest.fixture(scope="module")
def model(random_bundle_dir):
    return AMPLIFY.load(random_bundle_dir)


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(3)
    return {"images": (rng.random((2, 2, 32, 32, 3)) * 255).astype(np.uint8),
            "proprio": rng.standard_normal((2, 9)).astype(np.float32),
            "tracks": rng.uniform(-1, 1, (2, 2, 16, 16, 2)).astype(np.float32)}


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_every_endpoint_matches_the_model(random_server, model, inputs, encoding):
    c = random_server.client
    imgs, proprio, tracks = inputs["images"], inputs["proprio"], inputs["tracks"]
    emb = model.embed_text(INSTRUCTIONS).numpy()

    out = result(post(c, "/act", {"images": imgs, "proprio": proprio, "text": INSTRUCTIONS}, encoding))
    np.testing.assert_allclose(out["actions"], model.act(imgs, proprio, text=INSTRUCTIONS).numpy(), atol=1e-5)
    out_emb = result(post(c, "/act", {"images": imgs, "proprio": proprio, "text_emb": emb}, encoding))
    np.testing.assert_allclose(out_emb["actions"], out["actions"], atol=1e-6)

    idx, codes = model.predict_codes(imgs, text=INSTRUCTIONS)
    out = result(post(c, "/predict_codes", {"images": imgs, "text": INSTRUCTIONS, "return_codes": True}, encoding))
    np.testing.assert_array_equal(out["indices"], idx.numpy())
    np.testing.assert_allclose(out["codes"], codes.numpy(), atol=1e-6)

    init = tracks[:, :, 0]
    out = result(post(c, "/predict_traj", {"images": imgs, "text": INSTRUCTIONS, "init_points": init}, encoding))
    np.testing.assert_allclose(out["tracks"], model.predict_traj(imgs, init, text=INSTRUCTIONS).numpy(), atol=1e-5)

    with torch.no_grad():
        codes_mt, idx_mt = model.motion_tokenizer.tokenize(torch.from_numpy(np.diff(tracks, axis=2)))
        vel, logits = model.motion_tokenizer.decode(codes_mt)
    out = result(post(c, "/encode", {"tracks": tracks, "return_codes": True}, encoding))
    np.testing.assert_array_equal(out["indices"], idx_mt.numpy())
    np.testing.assert_allclose(out["codes"], codes_mt.numpy(), atol=1e-6)

    out = result(post(c, "/decode", {"indices": idx_mt.numpy().astype(np.int32), "return_logits": True}, encoding))
    np.testing.assert_allclose(out["velocities"], vel.numpy(), atol=1e-6)
    np.testing.assert_allclose(out["logits"], logits.numpy(), atol=1e-4)


def test_metadata_lists_instructions_and_the_name(random_server):
    meta = random_server.client.get("/metadata").json()
    assert meta["instructions"] == INSTRUCTIONS
    assert meta["model"] == {"name": "random-small", "version": "t1", "format": "amplify-dir"}


def test_text_encoder_of_another_size_is_refused_at_startup(tmp_path, monkeypatch):
    monkeypatch.setenv("AMPLIFY_HOME", str(tmp_path / "home"))  # never the user's default
    enc = tmp_path / "minilm"
    (enc / "1_Pooling").mkdir(parents=True)
    (enc / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 384}))
    with pytest.raises(TextEncoderError, match="384-dim embeddings but the model takes 512"):
        LocalTextEncoder(enc, expected_dim=512)
    with live_server(wait_ready=False, model=None, text_encoder=str(enc), warmup=False) as server:
        state = server.app.state.service
        deadline = time.time() + 60
        while state.status == "loading" and time.time() < deadline:
            time.sleep(0.05)
        assert server.client.get("/ready").status_code == 503 and "384" in state.error


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("AMPLIFY_MAX_BATCH_SIZE", "7")
    monkeypatch.setenv("AMPLIFY_BACKEND", "onnx")
    s = ServiceSettings(port=9001)
    assert (s.max_batch_size, s.backend, s.port) == (7, "onnx", 9001)
    monkeypatch.setenv("AMPLIFY_BACKEND", "tensorflow")
    with pytest.raises(ValueError):
        ServiceSettings()


def test_no_model_serves_the_users_build_else_the_shipped_one_else_an_untrained_one(monkeypatch, tmp_path,
                                                                                   random_bundle_dir):
    import shutil

    import amplify.defaults
    from service.backends.torch_backend import TorchBackend

    monkeypatch.setenv("AMPLIFY_HOME", str(tmp_path))
    shipped = amplify.defaults.shipped_bundle_dir()
    if (shipped / "model.safetensors").is_file():
        assert TorchBackend.load(None).model_metadata()["name"] == "default-shipped"
    monkeypatch.setattr(amplify.defaults, "shipped_bundle_dir", lambda: tmp_path / "not-shipped")
    meta = TorchBackend.load(None).model_metadata()
    assert meta["name"] == "untrained-small" and meta["trained"] is False
    shutil.copytree(random_bundle_dir, tmp_path / "default")
    backend = TorchBackend.load(None)
    assert backend.model_metadata()["name"] == "random-small" and backend.model_metadata()["trained"] is True
    assert backend.instruction_table()[0] == INSTRUCTIONS


def test_metadata_carries_the_recorded_evaluation(tmp_path, random_bundle_dir, random_server):
    from service.backends.torch_backend import TorchBackend

    assert "evaluation" not in random_server.client.get("/metadata").json()  # none recorded: none served
    model = AMPLIFY.load(random_bundle_dir)
    evaluation = {"command": "amplify eval-world --per-task 2", "model": {"success_rate": 0.5}}
    path = model.save(tmp_path / "evaluated", {"evaluation": evaluation, "execute": 1, "gripper_hold": 4})
    assert TorchBackend.load(path).model_metadata()["evaluation"] == evaluation
    with live_server(model=str(path), max_wait_ms=1) as server:
        served = server.client.get("/metadata").json()
        assert served["evaluation"] == evaluation and served["execute"] == 1 and served["gripper_hold"] == 4
