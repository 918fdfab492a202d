"""The bad-input corpus and property-based fuzzing of the protocol routes: KServe v2 infer bodies
(JSON and binary tensors) and openpi WebSocket frames. Every bad request gets a 4xx ``{"error": msg}``
(v2) or one text frame naming the field (openpi, connection kept open); never a 5xx, a closed
connection or a hang; the service answers correctly right after."""
from __future__ import annotations

import gzip
import json
import struct
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.reliability.harness import valid_payloads
from tests.reliability.test_bad_input_corpus import META

pytestmark = pytest.mark.timeout(300)
OK = valid_payloads(META, batch=1)
VIEWS = META["views"]
KEY = "rel-key"


# ---------------------------------------------------------------------------------------------
# KServe v2
# ---------------------------------------------------------------------------------------------
def tensor(name: str, arr: Any, datatype: str | None = None, shape: list | None = None, **extra: Any) -> dict:
    a = np.asarray(arr)
    dt = datatype or {"uint8": "UINT8", "float32": "FP32", "int64": "INT64"}.get(a.dtype.name, "FP32")
    return {"name": name, "datatype": dt, "shape": list(a.shape) if shape is None else shape,
            "data": a.reshape(-1).tolist(), **extra}


def v2_act(**override: Any) -> dict:
    t = {"images": tensor("images", OK["/act"]["images"]), "text_emb": tensor("text_emb", OK["/act"]["text_emb"]),
         "proprio": tensor("proprio", OK["/act"]["proprio"])}
    t.update(override)
    return {"inputs": [v for v in t.values() if v is not None]}


def binary(doc: dict, blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(doc).encode()
    return head + b"".join(blobs), {"Inference-Header-Content-Length": str(len(head))}


VEL = np.zeros((1, 2, 15, 16, 2), np.float32)
V2_CASES: list[tuple[str, str, Any, dict[str, str], int, str]] = [
    # (id, model, body (dict -> JSON, bytes as is), extra headers, status, a word the message names)
    ("empty-body", "amplify_act", b"", {}, 400, "empty"),
    ("not-json", "amplify_act", b"\xff\xfe garbage", {}, 400, "JSON"),
    ("json-array", "amplify_act", b"[1, 2]", {}, 400, "object"),
    ("no-inputs", "amplify_act", {}, {}, 400, "inputs"),
    ("inputs-not-list", "amplify_act", {"inputs": {"images": 1}}, {}, 400, "inputs"),
    ("input-no-name", "amplify_act", {"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}, {}, 400, "name"),
    ("duplicate-input", "amplify_encode", {"inputs": [tensor("velocities", VEL)] * 2}, {}, 400, "twice"),
    ("unknown-input", "amplify_encode", {"inputs": [tensor("velocities", VEL), tensor("path", [1.0])]}, {}, 400, "path"),
    ("missing-input", "amplify_act", v2_act(proprio=None), {}, 400, "proprio"),
    ("datatype-unknown", "amplify_encode", {"inputs": [tensor("velocities", VEL, "FP128")]}, {}, 400, "datatype"),
    ("datatype-bytes-images", "amplify_act", v2_act(images={"name": "images", "datatype": "BYTES", "shape": [1],
                                                            "data": ["x"]}), {}, 400, "images"),
    ("shape-negative", "amplify_encode", {"inputs": [tensor("velocities", VEL, shape=[1, 2, -15, 16, 2])]}, {}, 400,
     "shape"),
    ("shape-too-many-dims", "amplify_encode", {"inputs": [tensor("velocities", [0.0], shape=[1] * 40)]}, {}, 400, "shape"),
    ("shape-not-list", "amplify_encode", {"inputs": [tensor("velocities", VEL, shape="1,2")]}, {}, 400, "shape"),
    ("shape-enormous", "amplify_encode", {"inputs": [tensor("velocities", [0.0], shape=[2**24, 2**24, 2**24])]}, {},
     400, "elements"),
    ("data-count-mismatch", "amplify_encode", {"inputs": [tensor("velocities", VEL, shape=[1, 2, 15, 16, 3])]}, {},
     400, "elements"),
    ("data-ragged", "amplify_encode", {"inputs": [{"name": "velocities", "datatype": "FP32", "shape": [2, 2],
                                                   "data": [[1.0, 2.0], [3.0]]}]}, {}, 400, "velocities"),
    ("data-strings", "amplify_encode", {"inputs": [{"name": "velocities", "datatype": "FP32", "shape": [2],
                                                    "data": ["a", "b"]}]}, {}, 400, "numbers"),
    ("data-missing", "amplify_encode", {"inputs": [{"name": "velocities", "datatype": "FP32", "shape": [2]}]}, {}, 400,
     "data"),
    ("data-nan", "amplify_encode", b'{"inputs": [{"name": "velocities", "datatype": "FP32", "shape": [1, 2, 15, 16, 2], '
     b'"data": [' + b",".join([b"NaN"] * 960) + b"]}]}", {}, 400, "non-finite"),
    ("data-deep-nesting", "amplify_encode", b'{"inputs": [{"name": "velocities", "datatype": "FP32", "shape": [1], '
     b'"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}", {}, 400, ""),
    ("int64-fraction", "amplify_indices_to_codes", {"inputs": [{"name": "indices", "datatype": "INT64", "shape": [1, 15],
                                                                "data": [0.5] * 15}]}, {}, 400, "integers"),
    ("int64-overflow", "amplify_indices_to_codes", {"inputs": [{"name": "indices", "datatype": "INT64", "shape": [1, 15],
                                                                "data": [2**70] * 15}]}, {}, 400, "indices"),
    ("indices-out-of-codebook", "amplify_indices_to_codes", {"inputs": [tensor("indices", np.full((1, 15), 64))]}, {},
     400, "codebook"),
    ("velocities-out-of-range", "amplify_encode", {"inputs": [tensor("velocities", VEL + 3)]}, {}, 400, "velocities"),
    ("images-one-view", "amplify_act", v2_act(images=tensor("images", OK["/act"]["images"][:, :1])), {}, 400, "images"),
    ("images-too-small", "amplify_act", v2_act(images=tensor("images", OK["/act"]["images"][:, :, :4, :4])), {}, 400,
     "images"),
    ("images-float-out-of-range", "amplify_act", v2_act(images=tensor("images", OK["/act"]["images"].astype(np.float32))),
     {}, 400, "images"),
    ("images-int64", "amplify_act", v2_act(images=tensor("images", OK["/act"]["images"].astype(np.int64))), {}, 400,
     "images"),
    ("batch-mismatch", "amplify_act", v2_act(proprio=tensor("proprio", np.zeros((2, 9), np.float32))), {}, 400, "batch"),
    ("empty-batch", "amplify_encode", {"inputs": [tensor("velocities", VEL[:0])]}, {}, 400, "empty"),
    ("unknown-output", "amplify_encode", {"inputs": [tensor("velocities", VEL)], "outputs": [{"name": "secrets"}]}, {},
     400, "secrets"),
    ("sampling-unknown", "amplify_act", {**v2_act(), "parameters": {"sampling": "beam"}}, {}, 400, "sampling"),
    ("seed-negative", "amplify_act", {**v2_act(), "parameters": {"sampling": "topk", "seed": -1}}, {}, 400, "seed"),
    ("unknown-text", "amplify_text_embed", {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                                                        "data": ["fly to the moon"]}]}, {}, 404, "instruction"),
    ("unknown-model", "amplify_secrets", {"inputs": [tensor("velocities", VEL)]}, {}, 404, "model"),
    ("binary-size-past-body", "amplify_encode", binary({"inputs": [{"name": "velocities", "datatype": "FP32",
                                                                    "shape": [1, 2, 15, 16, 2],
                                                                    "parameters": {"binary_data_size": 7680}}]},
                                                       [b"\0" * 100]), None, 400, "binary_data_size"),
    ("binary-size-disagrees", "amplify_encode", binary({"inputs": [{"name": "velocities", "datatype": "FP32",
                                                                    "shape": [1, 2, 15, 16, 2],
                                                                    "parameters": {"binary_data_size": 100}}]},
                                                       [b"\0" * 100]), None, 400, "bytes"),
    ("binary-left-over", "amplify_encode", binary({"inputs": [tensor("velocities", VEL)]}, [b"\0" * 8]), None, 400,
     "binary"),
    ("binary-bytes-truncated", "amplify_text_embed", binary({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                                                                         "parameters": {"binary_data_size": 6}}]},
                                                            [struct.pack("<I", 50) + b"ab"]), None, 400, "BYTES"),
    ("header-length-not-int", "amplify_encode", b"{}", {"Inference-Header-Content-Length": "ten"}, 400,
     "Inference-Header-Content-Length"),
    ("header-length-past-body", "amplify_encode", b"{}", {"Inference-Header-Content-Length": "99"}, 400,
     "Inference-Header-Content-Length"),
    ("gzip-invalid", "amplify_encode", b"not gzip at all", {"Content-Encoding": "gzip"}, 400, "gzip"),
    ("gzip-bomb", "amplify_encode", gzip.compress(b" " * 3_000_000), {"Content-Encoding": "gzip"}, 413, "limit"),
    ("encoding-unknown", "amplify_encode", b"{}", {"Content-Encoding": "br"}, 415, "Content-Encoding"),
]


@pytest.fixture(scope="module")
def v2_client(make_client):
    with make_client(api_key=KEY, max_body_bytes=2_000_000, max_request_batch=4) as c:
        c.headers["x-api-key"] = KEY
        yield c


def _v2_error(resp, status: int | set[int], word: str = "") -> None:
    allowed = {status} if isinstance(status, int) else status
    assert resp.status_code in allowed, (resp.status_code, resp.text[:300])
    body = resp.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    assert "Traceback" not in body["error"] and word in body["error"], body


@pytest.mark.parametrize("case", V2_CASES, ids=lambda c: c[0])
def test_v2_bad_input(v2_client, case) -> None:
    name, model, body, headers, status, word = case
    if isinstance(body, tuple):  # (bytes, headers) from binary()
        body, headers = body
    content = json.dumps(body).encode() if isinstance(body, dict) else body
    _v2_error(v2_client.post(f"/v2/models/{model}/infer", content=content, headers=headers or {}), status, word)


def test_v2_other_refusals(v2_client) -> None:
    c = v2_client
    _v2_error(c.get("/v2/models/amplify_act/infer"), 405)
    _v2_error(c.post("/v2/models/amplify_act/versions/7/infer", content=json.dumps(v2_act())), 404, "version")
    _v2_error(c.get("/v2/models/amplify_act/versions/1/secrets/x"), 404)
    _v2_error(c.post("/v2/models/amplify_act/infer", content=json.dumps(v2_act()), headers={"x-api-key": "wrong"}), 401,
              "API key")
    big = v2_act(images=tensor("images", np.zeros((5, 2, 8, 8, 3), np.uint8)), text_emb=tensor(
        "text_emb", np.zeros((5, 512), np.float32)), proprio=tensor("proprio", np.zeros((5, 9), np.float32)))
    _v2_error(c.post("/v2/models/amplify_act/infer", content=json.dumps(big)), 400, "at most 4")
    _v2_error(c.post("/v2/models/amplify_encode/infer", content=b" " * 2_100_000), 413)
    assert c.get("/v2/health/ready").status_code == 200 and c.get("/v2/health/live").status_code == 200


# ---------------------------------------------------------------------------------------------
# openpi WebSocket frames
# ---------------------------------------------------------------------------------------------
def pk(a: np.ndarray) -> dict:
    return {b"__ndarray__": True, b"data": a.tobytes(), b"dtype": a.dtype.str, b"shape": list(a.shape)}


def obs(**override: Any) -> dict:
    img = OK["/act"]["images"][0]
    o: dict[str, Any] = {f"observation/{v}": pk(img[i]) for i, v in enumerate(VIEWS)}
    o["observation/state"] = pk(OK["/act"]["proprio"][0])
    o["text_emb"] = pk(OK["/act"]["text_emb"][0])
    for k, v in override.items():
        k = k.replace("__", "/")
        if v is None:
            o.pop(k, None)
        else:
            o[k] = v
    return o


IMG = OK["/act"]["images"][0, 0]
STATE = OK["/act"]["proprio"][0]
OPENPI_CASES: list[tuple[str, Any, str | None]] = [
    # (id, frame (dict -> msgpack, bytes as is, str as a text frame), the field the error names)
    ("not-msgpack", b"\xc1\xc1\xc1", None),
    ("truncated", msgpack.packb(obs())[:-10], None),
    ("a-list", msgpack.packb([1, 2, 3]), None),
    ("int-keys", msgpack.packb({1: 2}), None),
    ("text-frame", "hello", None),
    ("ext-type", msgpack.packb({"observation/state": msgpack.ExtType(42, b"\0" * 8)}), None),
    ("deep-nesting", b"\x81\xa6prompt" + b"\x91" * 100_000 + b"\x00", None),
    ("missing-view", obs(observation__agentview=None), "observation/agentview"),
    ("image-chw", obs(observation__agentview=pk(np.ascontiguousarray(IMG.transpose(2, 0, 1)))), "observation/agentview"),
    ("image-gray", obs(observation__agentview=pk(IMG[..., 0].copy())), "observation/agentview"),
    ("image-string", obs(observation__agentview="a picture"), "observation/agentview"),
    ("views-differ", obs(observation__eye_in_hand=pk(np.zeros((64, 64, 3), np.uint8))), "observation/eye_in_hand"),
    ("image-too-small", obs(observation__agentview=pk(IMG[:4, :4].copy()), observation__eye_in_hand=pk(IMG[:4, :4].copy())),
     "observation/agentview"),
    ("image-float-out-of-range", obs(observation__agentview=pk(IMG.astype(np.float32)),
                                     observation__eye_in_hand=pk(IMG.astype(np.float32))), "observation/agentview"),
    ("state-missing", obs(observation__state=None), "observation/state"),
    ("state-wrong-size", obs(observation__state=pk(STATE[:4].copy())), "observation/state"),
    ("state-2d", obs(observation__state=pk(STATE[None])), "observation/state"),
    ("state-nan", obs(observation__state=pk(np.full(9, np.nan, np.float32))), "observation/state"),
    ("state-strings", obs(observation__state=["a"] * 9), "observation/state"),
    ("both-prompt-and-emb", obs(prompt="open the top drawer"), "prompt"),
    ("neither-prompt-nor-emb", obs(text_emb=None), "prompt"),
    ("prompt-int", obs(text_emb=None, prompt=5), "prompt"),
    ("prompt-unknown", obs(text_emb=None, prompt="fly to the moon"), "text"),
    ("text-emb-wrong-size", obs(text_emb=pk(np.zeros(7, np.float32))), "text_emb"),
    ("unknown-key", obs(observation__wrist_image=pk(IMG)), "observation/wrist_image"),
    ("sampling-unknown", obs(sampling="beam"), "sampling"),
    ("seed-negative", obs(sampling="topk", seed=-1), "seed"),
    ("seed-bool", obs(sampling="topk", seed=True), "seed"),
    ("map-dtype-object", obs(observation__state={b"__ndarray__": True, b"data": b"\0" * 72, b"dtype": "|O",
                                                b"shape": [9]}), "observation/state"),
    ("map-dtype-pickle", obs(observation__state={b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "V8",
                                                b"shape": [1]}), "observation/state"),
    ("map-bytes-disagree", obs(observation__state={b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "<f4",
                                                  b"shape": [9]}), "observation/state"),
    ("map-negative-shape", obs(observation__state={b"__ndarray__": True, b"data": b"", b"dtype": "<f4",
                                                  b"shape": [-9]}), "observation/state"),
    ("map-enormous-shape", obs(observation__state={b"__ndarray__": True, b"data": b"", b"dtype": "<f4",
                                                  b"shape": [0, 2**62]}), "observation/state"),
    ("map-bigendian", obs(observation__state={b"__ndarray__": True, b"data": STATE.astype(">f4").tobytes(),
                                             b"dtype": ">f4", b"shape": [9]}), "observation/state"),
    ("npgeneric-object", obs(seed={b"__npgeneric__": True, b"data": "x", b"dtype": "|O"}), "seed"),
    ("project-map-lies", obs(observation__state={"__ndarray__": True, "data": b"\0" * 4, "dtype": "<f4", "shape": [9]}),
     "observation/state"),
]


@pytest.fixture(scope="module")
def ws_client(make_client):
    with make_client(api_key=KEY) as c:
        yield c


def _frame(value: Any) -> tuple[str, Any]:
    if isinstance(value, str):
        return "text", value
    return "bytes", value if isinstance(value, bytes) else msgpack.packb(value, use_bin_type=True)


def _expect_error(ws, field: str | None) -> dict:
    msg = ws.receive()
    assert msg["type"] == "websocket.send" and msg.get("text") is not None, msg
    err = json.loads(msg["text"])["error"]
    assert err["code"] in ("invalid_input", "unknown_instruction") and len(err["request_id"]) == 32, err
    assert "Traceback" not in err["message"]
    if field is not None:
        assert err["field"] == field and field in err["message"], err
    return err


def _expect_actions(ws) -> None:
    reply = msgpack.unpackb(ws.receive_bytes())
    a = reply["actions"]
    assert a[b"shape"] == [16, 7] and np.isfinite(np.frombuffer(a[b"data"], a[b"dtype"])).all()


def test_openpi_bad_frames_keep_the_connection(ws_client) -> None:
    """Every bad frame of the corpus on ONE connection: an error frame each, and a good one still works."""
    with ws_client.websocket_connect("/", headers={"Authorization": f"Api-Key {KEY}"}) as ws:
        meta = msgpack.unpackb(ws.receive_bytes())
        assert meta["protocol"] == "openpi"
        for name, frame, field in OPENPI_CASES:
            kind, data = _frame(frame)
            ws.send_text(data) if kind == "text" else ws.send_bytes(data)
            try:
                _expect_error(ws, field)
            except AssertionError as e:
                raise AssertionError(f"case {name}: {e}") from None
        ws.send_bytes(msgpack.packb(obs()))
        _expect_actions(ws)


def test_openpi_handshake_refusals(ws_client) -> None:
    from starlette.websockets import WebSocketDisconnect
    from starlette.testclient import WebSocketDenialResponse

    for headers in ({}, {"Authorization": "Api-Key wrong"}, {"Authorization": "Basic " + KEY}):
        with pytest.raises((WebSocketDenialResponse, WebSocketDisconnect)):
            with ws_client.websocket_connect("/openpi", headers=headers) as ws:
                ws.receive_bytes()
    for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}):
        with ws_client.websocket_connect("/openpi", headers=headers) as ws:
            ws.receive_bytes()


# ---------------------------------------------------------------------------------------------
# fuzzing
# ---------------------------------------------------------------------------------------------
NUM = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True), st.booleans())
DATA = st.recursive(st.one_of(NUM, st.text(max_size=5), st.none()), lambda c: st.lists(c, max_size=4), max_leaves=40)
NAMES = st.sampled_from(["images", "text_emb", "proprio", "velocities", "codes", "indices", "text", "x"])
DTYPES = st.sampled_from(["FP32", "FP16", "FP64", "UINT8", "INT64", "INT32", "BOOL", "BYTES", "FP8", ""])
SHAPE = st.lists(st.integers(-2, 20), max_size=6)
V2_TENSOR = st.fixed_dictionaries({"name": NAMES, "datatype": DTYPES, "shape": SHAPE},
                                  optional={"data": DATA, "parameters": st.dictionaries(
                                      st.sampled_from(["binary_data_size", "binary_data"]), NUM, max_size=2)})
V2_BODY = st.fixed_dictionaries({"inputs": st.lists(V2_TENSOR, max_size=4)},
                                optional={"outputs": st.lists(st.fixed_dictionaries({"name": NAMES}), max_size=3),
                                          "parameters": st.dictionaries(st.sampled_from(
                                              ["binary_data_output", "sampling", "seed"]), NUM, max_size=2),
                                          "id": st.one_of(st.text(max_size=8), NUM)})
MODELS = st.sampled_from(["amplify_act", "amplify_predict_codes", "amplify_encode", "amplify_decode",
                          "amplify_indices_to_codes", "amplify_inverse_dynamics", "amplify_text_embed"])
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck))


def test_fuzz_v2_infer(v2_client) -> None:
    seen = set()

    @FUZZ
    @given(model=MODELS, body=V2_BODY, tail=st.binary(max_size=64), split=st.booleans())
    def run(model, body, tail, split) -> None:
        head = json.dumps(body).encode()
        headers = {"Inference-Header-Content-Length": str(len(head))} if split else {}
        r = v2_client.post(f"/v2/models/{model}/infer", content=head + (tail if split else b""), headers=headers)
        seen.add(r.status_code)
        assert r.status_code < 500, (r.status_code, r.text[:300])
        if r.status_code >= 400:
            assert isinstance(r.json()["error"], str)

    run()
    assert seen & {400}, seen
    r = v2_client.post("/v2/models/amplify_act/infer", content=json.dumps(v2_act()))
    assert r.status_code == 200 and len(r.json()["outputs"]) == 2


ARRAY_MAP = st.fixed_dictionaries({b"__ndarray__": st.just(True),
                                   b"dtype": st.sampled_from(["<f4", "|u1", "<i8", ">f4", "|O", "V8", "<f2", "x"]),
                                   b"shape": st.lists(st.integers(-2, 300), max_size=4), b"data": st.binary(max_size=600)})
VALUES = st.one_of(ARRAY_MAP, st.integers(-2**63, 2**64 - 1), st.text(max_size=10), st.binary(max_size=10), st.none(),
                   st.lists(st.floats(), max_size=10), st.floats())
KEYS = st.sampled_from(["observation/agentview", "observation/eye_in_hand", "observation/state", "prompt", "text_emb",
                        "sampling", "seed", "observation", "junk"])


def test_fuzz_openpi_frames(ws_client) -> None:
    with ws_client.websocket_connect("/", headers={"X-API-Key": KEY}) as ws:
        ws.receive_bytes()

        @FUZZ
        @given(frame=st.dictionaries(KEYS, VALUES, max_size=6), base=st.booleans())
        def run(frame, base) -> None:
            body = {**obs(), **frame} if base else frame
            ws.send_bytes(msgpack.packb(body, use_bin_type=True))
            msg = ws.receive()
            assert msg["type"] == "websocket.send", msg  # never closed
            if msg.get("text") is not None:
                assert json.loads(msg["text"])["error"]["code"] in ("invalid_input", "unknown_instruction")

        run()
        ws.send_bytes(msgpack.packb(obs()))
        _expect_actions(ws)
