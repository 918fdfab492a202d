"""This project's clients in each protocol: the same numpy methods give the same numbers over http,
openpi and v2; errors are the same typed errors; the LIBERO robot client and amplify tokenize run
over each protocol they can."""
from __future__ import annotations

import asyncio

import h5py
import numpy as np
import pytest

from clients import (
    AuthenticationError, BadRequestError, NotFoundError, OpenPIClient, UnsupportedOperationError, V2Client, connect,
)
from tests.protocols.conftest import API_KEY, INSTRUCTIONS

pytestmark = pytest.mark.timeout(300)
PROTOCOLS = ("http", "openpi", "v2")


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    tracks = np.cumsum(rng.uniform(-0.05, 0.05, (2, 2, 16, 16, 2)), axis=3).astype(np.float32)  # (b, v, H, n, 2)
    return (rng.integers(0, 256, (2, 112, 112, 3), dtype=np.uint8), rng.normal(0, 0.5, 9).astype(np.float32),
            rng.normal(0, 1, 512).astype(np.float32), tracks)


def test_same_numbers_in_every_protocol(proto_server) -> None:
    images, proprio, emb, tracks = _inputs()
    clients = {p: connect(proto_server.url, protocol=p, api_key=API_KEY, expect_action_dim=7, expect_proprio_dim=9)
               for p in PROTOCOLS}
    try:
        assert isinstance(clients["openpi"], OpenPIClient) and isinstance(clients["v2"], V2Client)
        for c in clients.values():
            assert c.metadata()["views"] == ["agentview", "eye_in_hand"]
        ref = clients["http"].act(images, proprio, text=INSTRUCTIONS[1])
        for p in ("openpi", "v2"):
            np.testing.assert_allclose(clients[p].act(images, proprio, text=INSTRUCTIONS[1]), ref, atol=1e-5, err_msg=p)
            np.testing.assert_allclose(clients[p].act(images, proprio, text_emb=emb),
                                       clients["http"].act(images, proprio, text_emb=emb), atol=1e-5, err_msg=p)
        topk = clients["http"].act(images, proprio, text_emb=emb, sampling="topk", seed=11)
        for p in ("openpi", "v2"):  # seeded top-k travels too (openpi: keys sampling/seed; v2: parameters)
            np.testing.assert_allclose(clients[p].act(images, proprio, text_emb=emb, sampling="topk", seed=11), topk,
                                       atol=1e-5, err_msg=p)
        batch = clients["openpi"].act(np.stack([images, images]), np.stack([proprio, proprio]), text=INSTRUCTIONS[1])
        np.testing.assert_allclose(batch, np.stack([ref, ref]), atol=1e-5)
        http, v2 = clients["http"], clients["v2"]
        e_http, e_v2 = http.encode(tracks, return_codes=True), v2.encode(tracks, return_codes=True)
        np.testing.assert_array_equal(e_v2["indices"], e_http["indices"])
        d_http = http.decode(e_http["indices"], init_points=tracks[:, :, 0], return_logits=True)
        d_v2 = v2.decode(e_http["indices"], init_points=tracks[:, :, 0], return_logits=True)
        for k in ("velocities", "tracks", "logits"):
            np.testing.assert_allclose(d_v2[k], d_http[k], atol=1e-5, err_msg=k)
        np.testing.assert_array_equal(v2.predict_codes(images, text_emb=emb)["indices"],
                                      http.predict_codes(images, text_emb=emb)["indices"])
        np.testing.assert_array_equal(v2.predict_codes(images, text_emb=emb, sampling="topk", seed=5)["indices"],
                                      http.predict_codes(images, text_emb=emb, sampling="topk", seed=5)["indices"])
        np.testing.assert_allclose(v2.predict_traj(images, tracks[0, :, 0], text=INSTRUCTIONS[0]),
                                   http.predict_traj(images, tracks[0, :, 0], text=INSTRUCTIONS[0]), atol=1e-5)
        with pytest.raises(UnsupportedOperationError):
            clients["openpi"].encode(tracks)
    finally:
        for c in clients.values():
            c.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_same_errors_in_every_protocol(proto_server, protocol) -> None:
    images, proprio, emb, _ = _inputs()
    with pytest.raises(AuthenticationError):
        connect(proto_server.url, protocol=protocol, api_key="wrong", retries=0)
    with connect(proto_server.url, protocol=protocol, api_key=API_KEY) as c:
        with pytest.raises(BadRequestError) as e:
            c.act(images, proprio[:5], text_emb=emb)
        assert "proprio" in str(e.value) or "state" in str(e.value)
        if protocol != "v2":  # v2 embeds text client-side (amplify_text_embed) for known instructions only
            with pytest.raises(NotFoundError):
                c.act(images, proprio, text="fly to the moon")
        assert c.act(images, proprio, text_emb=emb).shape == (16, 7)  # and it keeps serving


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_robot_client_over_each_protocol(proto_server, protocol) -> None:
    from clients.libero.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(server=proto_server.url, api_key=API_KEY, env="builtin", text="builtin", execution="chunk",
                     max_steps=3, protocol=protocol)
    rep = evaluate(cfg, "builtin_push", tasks=["0"], episodes=1, num_envs=1)
    assert rep["steps"] == 3 and rep["act_latency_ms"]["count"] == 1


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from world.generate import generate
    from world.suites import SUITES

    root = tmp_path_factory.mktemp("tracks")
    generate("builtin_push", str(root), demos_per_task=1, num_points=16, horizon=16, workers=1,
             tasks=SUITES["builtin_push"][:2])
    return root


def test_tokenize_over_v2_equals_http(proto_server, dataset, tmp_path, capsys) -> None:
    from clients.tokenize import tokenize

    asyncio.run(tokenize(proto_server.url, [dataset], tmp_path / "http.hdf5", api_key=API_KEY, batch_size=16,
                         progress=False))
    from clients.tokenize import main as tokenize_main  # the CLI's code path, in-process (no torch import)

    argv = ["--protocol", "v2", "--server", proto_server.url, "--api-key", API_KEY, "--input", str(dataset),
            "--output", str(tmp_path / "v2.hdf5"), "--batch-size", "16", "--no-progress"]
    assert tokenize_main(argv) == 0
    with h5py.File(tmp_path / "http.hdf5") as a, h5py.File(tmp_path / "v2.hdf5") as b:
        keys = []
        a["demos"].visititems(lambda n, o: keys.append(n) if isinstance(o, h5py.Group) and "indices" in o else None)
        assert len(keys) == 2
        for k in keys:
            np.testing.assert_array_equal(a["demos"][k]["indices"][()], b["demos"][k]["indices"][()])
    with pytest.raises(SystemExit):  # openpi's protocol cannot encode: not a choice
        tokenize_main(["--protocol", "openpi", *argv[2:]])
    assert "invalid choice" in capsys.readouterr().err

def test_amplify_serve_process_speaks_all_three(proto_bundle_dir) -> None:
    """The real `amplify serve` (its uvicorn settings: h11, the WebSocket implementation, ws_max_size)."""
    from benchmarks.server import Server

    images, proprio, emb, _ = _inputs(2)
    with Server("--model", str(proto_bundle_dir), "--threads", "1", "--no-warmup", "--log-format", "text",
                "--max-body-bytes", "300000", ready_timeout_s=180) as server:
        got = {}
        for p in PROTOCOLS:
            with connect(server.url, protocol=p) as c:
                got[p] = c.act(images, proprio, text_emb=emb)
        for p in ("openpi", "v2"):
            np.testing.assert_allclose(got[p], got["http"], atol=1e-5, err_msg=p)
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect as ws_connect

        with ws_connect(server.url.replace("http", "ws") + "/", max_size=None) as ws:
            ws.recv()
            ws.send(b"\0" * 400_000)  # over --max-body-bytes: closed with 1009 (message too big)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv()
                ws.recv()
            assert closed.value.rcvd.code == 1009


def test_v2_client_reads_an_exports_instruction_table(proto_server, proto_bundle_dir, tmp_path) -> None:
    """What the v2 client does against Triton: views from the export's manifest, `text` from its table."""
    import json

    from amplify import AMPLIFY

    model = AMPLIFY.load(proto_bundle_dir)
    (tmp_path / "manifest.json").write_text(json.dumps({
        "model": {"name": "proto-small"}, "metadata": {"views": ["agentview", "eye_in_hand"], "action_dim": 7},
        "instructions": {"file": "instructions.json", "embeddings": "text_embeddings.npy"}}))
    (tmp_path / "instructions.json").write_text(json.dumps(list(model.instructions)))
    np.save(tmp_path / "text_embeddings.npy", model.text_table.detach().numpy())
    images, proprio, _, _ = _inputs(4)
    with V2Client(proto_server.url, api_key=API_KEY, export_dir=tmp_path) as v2, \
            connect(proto_server.url, api_key=API_KEY) as http:
        assert v2.metadata()["instructions"] == INSTRUCTIONS
        np.testing.assert_allclose(v2.text_embeddings([INSTRUCTIONS[1]]), model.text_table[1:2].numpy())
        np.testing.assert_allclose(v2.act(images, proprio, text=INSTRUCTIONS[1]),
                                   http.act(images, proprio, text=INSTRUCTIONS[1]), atol=1e-5)
