"""openpi's WebSocket policy protocol: the unmodified openpi-client 0.1.2 (in its own venv, numpy<2)
drives the service: handshake and metadata, actions equal to POST /act on the same inputs, a bad
observation (an error; the connection keeps serving), the API key, 8 robots at once. Then the
protocol's limits with this project's client: a fault closes with 1011, too many connections 1013,
idle connections are closed, frames over the body limit are refused."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import msgpack
import numpy as np
import pytest

from tests.protocols.conftest import API_KEY, INSTRUCTIONS
from tests.service.live import live_server, msgpack_body, unpack, untrained_backend

pytestmark = pytest.mark.timeout(300)
HERE = Path(__file__).resolve().parent


def _inputs(n: int = 3, size: int = 96, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"images": rng.integers(0, 256, (n, 2, size, size, 3), dtype=np.uint8),
            "state": rng.normal(0, 0.5, (n, 9)).astype(np.float32),
            "views": np.array(["agentview", "eye_in_hand"]),
            "prompts": np.array([INSTRUCTIONS[i % 2] for i in range(n)])}


def _act(client: httpx.Client, images: np.ndarray, state: np.ndarray, prompt: str) -> np.ndarray:
    r = client.post("/act", content=msgpack_body({"images": images[None], "proprio": state[None], "text": [prompt]}),
                    headers={"content-type": "application/msgpack", "x-api-key": API_KEY})
    assert r.status_code == 200, r.text
    return unpack(r.content)["actions"][0]


def test_unmodified_openpi_client(proto_server, openpi_python, tmp_path) -> None:
    data = _inputs()
    np.savez(tmp_path / "in.npz", **data)
    port = str(proto_server.port)
    res = subprocess.run([str(openpi_python), str(HERE / "openpi_robot.py"), "127.0.0.1", port, API_KEY,
                          str(tmp_path / "in.npz"), str(tmp_path)], capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads((tmp_path / "result.json").read_text())
    acts = dict(np.load(tmp_path / "actions.npz"))

    meta = out["metadata"]  # handshake: the /metadata object plus the observation keys
    assert meta["protocol"] == "openpi" and meta["views"] == ["agentview", "eye_in_hand"]
    assert meta["instructions"] == INSTRUCTIONS and (meta["action_horizon"], meta["action_dim"]) == (16, 7)
    assert set(meta["observation_keys"]["images"]) == {"observation/agentview", "observation/eye_in_hand"}
    assert out["actions_type"] == ["ndarray", "float32"]  # decoded by openpi-client's own msgpack_numpy
    assert out["server_timing"]["infer_ms"] > 0 and "prev_total_ms" in out["server_timing"]

    ref = np.stack([_act(proto_server.client, data["images"][i], data["state"][i], str(data["prompts"][i]))
                    for i in range(len(data["images"]))])
    assert acts["actions"].shape == (3, 16, 7)
    np.testing.assert_allclose(acts["actions"], ref, atol=1e-5)  # /act on the same inputs (batching: rounding only)

    assert out["bad"] is not None and "observation/state" in out["bad"] and "(9,)" in out["bad"] and "(4,)" in out["bad"]
    np.testing.assert_allclose(acts["after"], ref[0], atol=1e-5)  # the connection kept serving
    assert out["wrong_key"] is not None and "401" in out["wrong_key"]
    assert out["no_key"] is not None and "401" in out["no_key"]

    assert out["robot_errors"] == []
    robots = acts["robots"]  # (8 robots, 2 steps, A, 7); robot r step k sent observation (r + k) % 3
    for r in range(8):
        for k in range(2):
            np.testing.assert_allclose(robots[r, k], ref[(r + k) % 3], atol=1e-5)
    metrics = proto_server.client.get("/metrics", headers={"x-api-key": API_KEY}).text
    ok = [line for line in metrics.splitlines() if line.startswith('amplify_requests_total{endpoint="/openpi",method="WS",status="200"}')]
    assert ok and float(ok[0].split()[-1]) >= 3 + 1 + 16
    assert 'amplify_requests_total{endpoint="/openpi",method="WS",status="400"}' in metrics


def test_healthz_and_ws_paths(proto_server) -> None:
    from clients import OpenPIClient

    assert proto_server.client.get("/healthz").status_code == 200  # open, as openpi's server
    data = _inputs(1, size=128)
    for path in ("/", "/openpi"):
        with OpenPIClient(proto_server.url, api_key=API_KEY, path=path) as c:
            a = c.act(data["images"][0], data["state"][0], text=INSTRUCTIONS[0])
            assert a.shape == (16, 7) and c.last_server_timing["model_ms"] > 0
            assert c.last_server_timing["queue_ms"] >= 0 and c.last_server_timing["resume_ms"] > 0
    # the project's own ndarray maps (str keys) are accepted too
    from websockets.sync.client import connect
    from service.codecs import pack_array

    with connect(proto_server.url.replace("http", "ws") + "/openpi", additional_headers={"X-API-Key": API_KEY}) as ws:
        ws.recv()
        ws.send(msgpack.packb({"observation/agentview": pack_array(data["images"][0, 0]),
                               "observation/eye_in_hand": pack_array(data["images"][0, 1]),
                               "observation/state": pack_array(data["state"][0]), "prompt": INSTRUCTIONS[0]},
                              use_bin_type=True))
        reply = msgpack.unpackb(ws.recv())
        assert reply["actions"][b"shape"] == [16, 7]
    np.testing.assert_allclose(a, _act(proto_server.client, data["images"][0], data["state"][0], INSTRUCTIONS[0]),
                               atol=1e-5)


class _FailingAct:
    """An untrained back end whose act fails (a server fault)."""

    def __init__(self):
        self._b = untrained_backend()

    def __getattr__(self, name):
        return getattr(self._b, name)

    def act(self, *a, **k):
        raise RuntimeError("simulated fault: secret internals")


def test_fault_limits_and_idle(tmp_path) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from clients import OpenPIClient, OverloadedError, ServerError

    data = _inputs(1, size=64)
    with live_server(lambda s: _FailingAct(), ws_max_connections=2, ws_idle_timeout_s=1.0, max_body_bytes=200_000,
                     warmup=False) as srv:
        ws_url = srv.url.replace("http", "ws") + "/"
        c = OpenPIClient(srv.url, retries=0)
        with pytest.raises(ServerError) as e:  # a fault: a text frame with the request id, then close 1011
            c.act(data["images"][0], data["state"][0], text_emb=np.zeros(512, np.float32))
        assert "request id" in e.value.message and "secret" not in e.value.message
        with connect(ws_url) as ws:
            ws.recv()
            ws.send(msgpack.packb({"observation/agentview": 1}))  # bad input first: a text frame, still open
            assert "observation/agentview" in ws.recv()
            obs = {"observation/agentview": data["images"][0, 0], "observation/eye_in_hand": data["images"][0, 1],
                   "observation/state": data["state"][0], "text_emb": np.zeros(512, np.float32)}
            from clients.openpi import pack

            ws.send(pack(obs))
            err = json.loads(ws.recv())
            assert err["error"]["code"] == "internal_error" and err["error"]["request_id"] in err["error"]["message"]
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv()
            assert closed.value.rcvd.code == 1011
        # at most 2 connections: the third is closed with 1013 (try again later)
        with connect(ws_url) as a, connect(ws_url) as b:
            a.recv(), b.recv()
            with pytest.raises(OverloadedError):
                OpenPIClient(srv.url, retries=0)
        # a frame over the body limit: refused with 1009, before any decoding
        with connect(ws_url, max_size=None) as ws:
            ws.recv()
            ws.send(b"\x00" * 300_000)
            assert json.loads(ws.recv())["error"]["code"] == "payload_too_large"
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv()
            assert closed.value.rcvd.code == 1009
        # idle: closed after ws_idle_timeout_s without a frame
        with connect(ws_url) as ws:
            ws.recv()
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd.code == 1000 and "idle" in closed.value.rcvd.reason
        metrics = srv.client.get("/metrics").text
        assert "amplify_websocket_connections 0.0" in metrics
