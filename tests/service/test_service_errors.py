"""Bad input of every kind the contract lists gets its 4xx naming the field; the service keeps serving."""
from __future__ import annotations

import json

import msgpack
import numpy as np
import pytest

from tests.service.live import live_server, post, result

RNG = np.random.default_rng(0)
IMG = RNG.random((1, 2, 8, 8, 3)).astype(np.float32)  # small images: validation only, resized by the model
PROPRIO = np.zeros((1, 9), np.float32)
EMB = np.zeros((1, 512), np.float32)
TRACKS = np.zeros((1, 2, 16, 16, 2), np.float32)
INIT = np.zeros((1, 2, 16, 2), np.float32)


def act(**changes):
    body = {"images": IMG, "proprio": PROPRIO, "text_emb": EMB}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def _nd(dtype, shape, data):
    return {"__ndarray__": True, "dtype": dtype, "shape": shape, "data": data}


# (path, fields, field named in the error)
BAD_JSON = [
    ("/act", act(images=np.zeros((1, 3, 8, 8, 3))), "images"),                       # wrong view count
    ("/act", act(images=np.zeros((0, 2, 8, 8, 3)), proprio=np.zeros((0, 9)), text_emb=np.zeros((0, 512))), "images"),
    ("/act", act(images=np.zeros((1, 2, 8, 8))), "images"),                          # no channel axis
    ("/act", act(images=np.full((1, 2, 8, 8, 3), 1.5)), "images"),                   # float out of [0, 1]
    ("/act", act(images=np.full((1, 2, 8, 8, 3), 300)), "images"),                   # integers out of 0-255
    ("/act", act(images=np.zeros((1, 2, 4, 4, 3))), "images"),                       # too small
    ("/act", act(images=None), "images"),                                            # missing
    ("/act", act(proprio=np.zeros((1, 5))), "proprio"),
    ("/act", act(proprio=np.zeros((2, 9))), "proprio"),                              # batch disagrees
    ("/act", act(text_emb=np.zeros((1, 384))), "text_emb"),
    ("/act", act(text_emb=None), "text_emb"),                                        # neither text nor text_emb
    ("/act", act(text=["a"]), "text_emb"),                                           # both
    ("/act", act(text_emb=None, text=["a", "b"]), "text"),                           # wrong count
    ("/act", act(sampling="beam"), "sampling"),
    ("/act", act(seed=-1), "seed"),
    ("/act", act(imgs=IMG), "imgs"),                                                 # unknown field
    ("/encode", {}, "tracks"),
    ("/encode", {"tracks": TRACKS, "velocities": TRACKS[:, :, 1:]}, "tracks"),
    ("/encode", {"tracks": np.zeros((1, 2, 15, 16, 2))}, "tracks"),                 # wrong H
    ("/encode", {"tracks": np.full((1, 2, 16, 16, 2), 1.5)}, "tracks"),             # out of [-1, 1]
    ("/encode", {"velocities": np.zeros((1, 2, 16, 16, 2))}, "velocities"),         # t = H - 1
    ("/encode", {"tracks": [[0.0, 0.0], [0.0]]}, "tracks"),                          # ragged
    ("/encode", {"tracks": [["a", "b"]]}, "tracks"),                                 # not numbers
    ("/encode", {"tracks": 3}, "tracks"),                                            # not an array
    ("/encode", {"tracks": TRACKS, "return_codes": "maybe"}, "return_codes"),
    ("/decode", {"indices": np.full((1, 15), 64)}, "indices"),                       # outside the codebook
    ("/decode", {"indices": np.full((1, 15), -1)}, "indices"),
    ("/decode", {"indices": np.full((1, 15), 1.5)}, "indices"),                      # not integers
    ("/decode", {"indices": np.zeros((1, 14), np.int64)}, "indices"),               # wrong S
    ("/decode", {"codes": np.zeros((1, 15, 32))}, "codes"),                          # wrong h
    ("/decode", {"indices": np.zeros((1, 15), np.int64), "init_points": np.zeros((1, 2, 8, 2))}, "init_points"),
    ("/decode", {"indices": np.zeros((2, 15), np.int64), "init_points": INIT}, "init_points"),
    ("/predict_codes", {"images": IMG, "text_emb": EMB, "return_codes": 3}, "return_codes"),
    ("/predict_traj", {"images": IMG, "text_emb": EMB}, "init_points"),
    ("/predict_traj", {"images": IMG, "text_emb": EMB, "init_points": np.full((1, 2, 16, 2), -2.0)}, "init_points"),
]


@pytest.mark.parametrize("path,fields,field", BAD_JSON, ids=[f"{p}-{f}-{i}" for i, (p, _, f) in enumerate(BAD_JSON)])
def test_bad_json_input_is_400_naming_the_field(fixture_server, path, fields, field):
    r = post(fixture_server.client, path, fields, "json")
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"code", "message", "field", "request_id"}
    assert err["field"] == field, err
    assert err["request_id"] == r.headers["x-request-id"]
    assert field in err["message"]


def test_shape_errors_name_the_expected_and_received_shapes(fixture_server):
    r = post(fixture_server.client, "/encode", {"tracks": np.zeros((1, 2, 15, 16, 2))})
    msg = r.json()["error"]["message"]
    assert "(b, 2, 16, 16, 2)" in msg and "(1, 2, 15, 16, 2)" in msg


def test_non_finite_values_are_400(fixture_server):
    body = json.dumps({"velocities": np.zeros((1, 2, 15, 16, 2)).tolist()}).replace("0.0", "NaN", 1)
    r = fixture_server.client.post("/encode", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "velocities"
    tracks = TRACKS.copy()
    tracks[0, 0, 0, 0, 0] = np.inf
    r = post(fixture_server.client, "/encode", {"tracks": tracks}, "msgpack")
    assert r.status_code == 400 and r.json()["error"]["field"] == "tracks"


BAD_MSGPACK = [
    ({"tracks": _nd("<c8", [1], b"\0" * 8)}, "tracks"),                              # dtype not accepted
    ({"tracks": _nd(">f4", [1], b"\0" * 4)}, "tracks"),                              # big-endian
    ({"tracks": _nd("<f4", [1, 2, 16, 16, 2], b"\0" * 12)}, "tracks"),              # bytes != shape
    ({"tracks": _nd("<f4", [-1, 2], b"")}, "tracks"),                               # negative dim
    ({"tracks": _nd("<f4", [1 << 40, 1 << 40], b"")}, "tracks"),                    # absurd dim
    ({"tracks": _nd("<f4", "12", b"")}, "tracks"),
    ({"tracks": _nd("<i4", [1, 2, 16, 16, 2], b"\0" * 4096)}, "tracks"),           # ints for a float field
    ({"indices": _nd("<f4", [1, 15], b"\0" * 60)}, "indices"),                      # floats for indices
]


@pytest.mark.parametrize("fields,field", BAD_MSGPACK)
def test_bad_msgpack_arrays_are_400(fixture_server, fields, field):
    path = "/decode" if "indices" in fields else "/encode"
    r = fixture_server.client.post(path, content=msgpack.packb(fields), headers={"content-type": "application/msgpack"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == field


def test_bad_msgpack_image_dtype(fixture_server):
    images = _nd("<u2", [1, 2, 8, 8, 3], b"\0" * 768)
    body = msgpack.packb({"images": images, "proprio": PROPRIO.tolist(), "text_emb": EMB.tolist()})
    r = fixture_server.client.post("/act", content=body, headers={"content-type": "application/msgpack"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "images"


@pytest.mark.parametrize("body,ctype,status", [
    (b"{not json", "application/json", 400),
    (b"[1, 2]", "application/json", 400),
    (b"", "application/json", 400),
    (b"\xc1\xc1", "application/msgpack", 400),
    (b"tracks=1", "text/plain", 415),
])
def test_malformed_bodies(fixture_server, body, ctype, status):
    r = fixture_server.client.post("/encode", content=body, headers={"content-type": ctype})
    assert r.status_code == status, r.text
    assert r.json()["error"]["request_id"]


def test_unknown_instruction_is_404(fixture_server):
    r = post(fixture_server.client, "/act", act(text_emb=None, text=["fly to the moon"]))
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["field"] == "text" and "text_emb" in err["message"]


def test_unknown_path_and_method_use_the_error_body(fixture_server):
    r = fixture_server.client.get("/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = fixture_server.client.get("/act")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_service_keeps_serving_after_bad_input(fixture_server, small_data):
    _, inp, exp = small_data
    for _ in range(3):
        post(fixture_server.client, "/act", act(images=np.zeros((1, 3, 8, 8, 3))))
    out = result(post(fixture_server.client, "/act",
                      {"images": inp["images"], "proprio": inp["proprio"], "text_emb": inp["text_emb"]}, "msgpack"))
    np.testing.assert_allclose(out["actions"], exp["amp_actions"], atol=1e-4)


def test_body_limit_is_413_declared_or_streamed(untrained_factory):
    with live_server(untrained_factory, max_body_bytes=4096, warmup=False) as server:
        big = {"tracks": np.zeros((1, 2, 16, 16, 2)).tolist()}  # ~ 6 kB of JSON
        r = server.client.post("/encode", json=big)
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

        def chunks():  # no Content-Length: the limit holds while the body streams in
            for _ in range(10):
                yield b" " * 1024
        r = server.client.post("/encode", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert server.client.get("/health").status_code == 200


def test_request_batch_limit(untrained_factory):
    with live_server(untrained_factory, max_request_batch=2, warmup=False) as server:
        r = post(server.client, "/encode", {"velocities": np.zeros((3, 2, 15, 16, 2), np.float32)}, "msgpack")
        assert r.status_code == 400 and r.json()["error"]["field"] == "velocities" and "at most 2" in r.text
        r = post(server.client, "/act", act(images=np.zeros((3, 2, 8, 8, 3), np.float32),
                                            proprio=np.zeros((3, 9)), text_emb=np.zeros((3, 512))), "msgpack")
        assert r.status_code == 400 and r.json()["error"]["field"] == "images"
        r = post(server.client, "/encode", {"velocities": np.zeros((2, 2, 15, 16, 2), np.float32)}, "msgpack")
        assert r.status_code == 200


def test_api_key(untrained_factory):
    with live_server(untrained_factory, api_key="s3cret", warmup=False) as server:
        c = server.client
        body = {"indices": [[0] * 15]}
        assert c.get("/health").status_code == 200
        r = c.post("/decode", json=body)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized" and r.headers["x-request-id"]
        assert c.post("/decode", json=body, headers={"authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/decode", json=body, headers={"x-api-key": "s3cret!"}).status_code == 401
        assert c.post("/decode", json=body, headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert c.post("/decode", json=body, headers={"x-api-key": "s3cret"}).status_code == 200
        assert c.get("/metadata").status_code == 401
