"""A hand-made corpus of bad requests, in JSON and msgpack: each gets the contract's 4xx (never a
5xx or a hang) with the error body naming what is wrong, and the service answers correctly right after."""
from __future__ import annotations

import json
from typing import Any

import msgpack
import numpy as np
import pytest

from tests.reliability.harness import EXPECTED_FIELD, JSON, MSGPACK, check_answer, encode, valid_payloads

pytestmark = pytest.mark.timeout(120)  # a hang is a failure, not a stuck suite

META_KEYS = ("views", "image_size", "track_horizon", "num_tracks", "code_length", "hidden_dim", "codebook_size",
             "proprio_dim", "text_embedding_dim")

# What the small preset's /metadata says (checked against the live app in test_meta_matches).
META = {"views": ["agentview", "eye_in_hand"], "image_size": [128, 128], "track_horizon": 16, "num_tracks": 16,
        "code_length": 15, "hidden_dim": 64, "codebook_size": 64, "proprio_dim": 9, "text_embedding_dim": 512}
OK = valid_payloads(META, batch=1)
B, V, H, N = 1, 2, 16, 16


def raw_map(dtype: str, shape: list, data: bytes) -> dict[str, Any]:
    return {"__ndarray__": True, "dtype": dtype, "shape": shape, "data": data}


def with_field(endpoint: str, /, **fields: Any) -> dict[str, Any]:
    return {**OK[endpoint], **fields}


def without(path: str, name: str) -> dict[str, Any]:
    return {k: v for k, v in OK[path].items() if k != name}


def deep(depth: int) -> Any:
    x: Any = 0.0
    for _ in range(depth):
        x = [x]
    return x


# (case id, endpoint, payload dict (encoded in both encodings) or raw bytes per encoding, allowed statuses, field)
MSGPACK_ONLY = {"proprio-int8"}


def structured_cases() -> list[tuple[str, str, dict[str, Any], set[int], str | None]]:
    img = OK["/act"]["images"]
    f32 = np.float32
    return [
        ("empty-object", "/act", {}, {400}, None),
        ("unknown-field", "/act", with_field("/act", model="/etc/passwd"), {400}, "model"),
        ("unknown-field-path", "/encode", with_field("/encode", path="../../etc/shadow"), {400}, "path"),
        ("missing-images", "/act", without("/act", "images"), {400}, "images"),
        ("missing-proprio", "/act", without("/act", "proprio"), {400}, "proprio"),
        ("both-text-and-emb", "/act", with_field("/act", text=["x"]), {400}, "text_emb"),
        ("neither-text-nor-emb", "/act", without("/act", "text_emb"), {400}, "text_emb"),
        ("unknown-instruction", "/act", {**without("/act", "text_emb"), "text": ["fly to the moon"]}, {404}, None),
        ("wrong-view-count", "/act", with_field("/act", images=img[:, :1]), {400}, "images"),
        ("three-views", "/act", with_field("/act", images=np.concatenate([img, img[:, :1]], 1)), {400}, "images"),
        ("image-not-rgb", "/act", with_field("/act", images=img[..., :1]), {400}, "images"),
        ("image-too-small", "/act", with_field("/act", images=img[:, :, :4, :4]), {400}, "images"),
        ("image-4d", "/act", with_field("/act", images=img[0]), {400}, "images"),
        ("image-float-out-of-range", "/act", with_field("/act", images=img.astype(f32)), {400}, "images"),
        ("image-nan", "/act", with_field("/act", images=np.full(img.shape, np.nan, f32)), {400}, "images"),
        ("empty-batch", "/act", {k: v[:0] for k, v in OK["/act"].items()}, {400}, "images"),
        ("batch-mismatch", "/act", with_field("/act", proprio=np.zeros((2, 9), f32)), {400}, "proprio"),
        ("proprio-wrong-dim", "/act", with_field("/act", proprio=np.zeros((1, 8), f32)), {400}, "proprio"),
        ("proprio-inf", "/act", with_field("/act", proprio=np.full((1, 9), np.inf, f32)), {400}, "proprio"),
        ("proprio-int8", "/act", with_field("/act", proprio=np.zeros((1, 9), np.int8)), {400}, "proprio"),
        ("proprio-scalar", "/act", with_field("/act", proprio=3.0), {400}, "proprio"),
        ("proprio-string", "/act", with_field("/act", proprio="zeros"), {400}, "proprio"),
        ("text-emb-wrong-dim", "/act", with_field("/act", text_emb=np.zeros((1, 7), f32)), {400}, "text_emb"),
        ("sampling-unknown", "/act", with_field("/act", sampling="beam"), {400}, "sampling"),
        ("seed-negative", "/act", with_field("/act", sampling="topk", seed=-1), {400}, "seed"),
        ("seed-huge", "/act", with_field("/act", sampling="topk", seed=2**64 - 1), {400}, "seed"),
        ("text-not-list", "/predict_codes", {**without("/predict_codes", "text_emb"), "text": 5}, {400}, "text"),
        ("tracks-out-of-range", "/encode", {"tracks": OK["/encode"]["tracks"] * 10}, {400}, "tracks"),
        ("tracks-nan", "/encode", {"tracks": np.full((B, V, H, N, 2), np.nan, f32)}, {400}, "tracks"),
        ("tracks-wrong-horizon", "/encode", {"tracks": np.zeros((B, V, H + 1, N, 2), f32)}, {400}, "tracks"),
        ("tracks-and-velocities", "/encode", {"tracks": np.zeros((B, V, H, N, 2), f32),
                                              "velocities": np.zeros((B, V, H - 1, N, 2), f32)}, {400}, "tracks"),
        ("velocities-out-of-range", "/encode", {"velocities": np.full((B, V, H - 1, N, 2), 3, f32)}, {400},
         "velocities"),
        ("return-codes-not-bool", "/encode", with_field("/encode", return_codes="maybe"), {400}, "return_codes"),
        ("indices-out-of-codebook", "/decode", {"indices": np.full((1, 15), 64, np.int64)}, {400}, "indices"),
        ("indices-negative", "/decode", {"indices": np.full((1, 15), -1, np.int64)}, {400}, "indices"),
        ("indices-float", "/decode", {"indices": np.zeros((1, 15), f32)}, {400}, "indices"),
        ("indices-wrong-length", "/decode", {"indices": np.zeros((1, 14), np.int64)}, {400}, "indices"),
        ("codes-nan", "/decode", {"codes": np.full((1, 15, 64), np.nan, f32)}, {400}, "codes"),
        ("init-points-batch-mismatch", "/decode", {"indices": np.zeros((1, 15), np.int64),
                                                   "init_points": np.zeros((3, V, N, 2), f32)}, {400}, "init_points"),
        ("init-points-missing", "/predict_traj", without("/predict_traj", "init_points"), {400}, "init_points"),
        ("deep-nesting-field", "/encode", {"tracks": deep(200)}, {400}, "tracks"),
        ("deep-nesting-unknown", "/encode", {"x": deep(200)}, {400}, "x"),
    ]


def msgpack_only_cases() -> list[tuple[str, str, bytes, set[int]]]:
    """Raw msgpack bodies: ndarray maps that lie, garbage and truncation."""
    good = encode(OK["/encode"], MSGPACK)
    tr = OK["/encode"]["tracks"]
    f4 = tr.tobytes()

    def body(**fields: Any) -> bytes:
        return msgpack.packb(fields, use_bin_type=True)

    return [
        ("mp-truncated", "/encode", good[: len(good) // 2], {400}),
        ("mp-truncated-1", "/encode", good[:-1], {400}),
        ("mp-garbage", "/encode", bytes(range(256)) * 8, {400}),
        ("mp-trailing-bytes", "/encode", good + b"\x00\x01", {400}),
        ("mp-not-a-map", "/encode", msgpack.packb([1, 2, 3]), {400}),
        ("mp-int-key", "/encode", msgpack.packb({1: 2}), {400}),
        ("mp-bytes-key", "/encode", msgpack.packb({b"tracks": 1}, use_bin_type=True), {400}),
        ("mp-ext-type", "/encode", body(tracks=msgpack.ExtType(42, b"\x00" * 8)), {400}),
        ("mp-huge-declared-array", "/encode", b"\x81\xa6tracks\xdd\xff\xff\xff\xff", {400}),
        ("mp-huge-declared-bin", "/encode", b"\x81\xa6tracks\xc6\xff\xff\xff\xff\x00", {400}),
        ("mp-deep-nesting", "/encode", b"\x81\xa6tracks" + b"\x91" * 100_000 + b"\x00", {400}),
        ("mp-size-disagrees", "/encode", body(tracks=raw_map("<f4", list(tr.shape), f4[:-4])), {400}),
        ("mp-size-larger", "/encode", body(tracks=raw_map("<f4", list(tr.shape), f4 + b"\0" * 4)), {400}),
        ("mp-wrong-dtype-object", "/encode", body(tracks=raw_map("|O", list(tr.shape), f4)), {400}),
        ("mp-wrong-dtype-bigendian", "/encode", body(tracks=raw_map(">f4", list(tr.shape), f4)), {400}),
        ("mp-dtype-pickle", "/encode", body(tracks=raw_map("V8", [1], b"\0" * 8)), {400}),
        ("mp-dtype-not-string", "/encode", body(tracks=raw_map(None, list(tr.shape), f4)), {400}),  # type: ignore
        ("mp-negative-dim", "/encode", body(tracks=raw_map("<f4", [1, 2, -16, 16, 2], f4)), {400}),
        ("mp-enormous-dims", "/encode", body(tracks=raw_map("<f4", [2**31, 2**31, 2**31, 16, 2], f4)), {400}),
        ("mp-enormous-dim-zero-bytes", "/encode", body(tracks=raw_map("<f4", [0, 2**62], b"")), {400}),
        ("mp-float-dims", "/encode", body(tracks=raw_map("<f4", [1.0, 2, 16, 16, 2], f4)), {400}),
        ("mp-too-many-dims", "/encode", body(tracks=raw_map("<f4", [1] * 40, b"\0" * 4)), {400}),
        ("mp-shape-not-list", "/encode", body(tracks=raw_map("<f4", "1,2,16,16,2", f4)), {400}),  # type: ignore
        ("mp-data-not-bytes", "/encode", body(tracks=raw_map("<f4", [1], "abcd")), {400}),  # type: ignore
        ("mp-images-int64", "/act", encode(with_field("/act", images=OK["/act"]["images"].astype(np.int64)), MSGPACK),
         {400}),
        ("mp-json-body", "/encode", encode(OK["/encode"], JSON), {400}),
    ]


def json_only_cases() -> list[tuple[str, str, bytes, set[int]]]:
    good = encode(OK["/encode"], JSON)
    return [
        ("json-truncated", "/encode", good[: len(good) // 2], {400}),
        ("json-garbage", "/encode", b"\xff\xfe\x00garbage", {400}),
        ("json-not-object", "/encode", b"[1, 2, 3]", {400}),
        ("json-null", "/encode", b"null", {400}),
        ("json-empty", "/encode", b"", {400}),
        ("json-deep-nesting", "/encode", b'{"tracks": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", {400}),
        ("json-deep-object", "/encode", b'{"x": ' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}", {400}),
        ("json-huge-int", "/encode", b'{"tracks": [' + b"9" * 5000 + b"]}", {400}),
        ("json-nan-literal", "/encode", json.dumps({"tracks": np.full((B, V, H, N, 2), np.nan).tolist()}).encode(),
         {400}),
        ("json-ragged", "/encode", json.dumps({"tracks": [[1.0, 2.0], [3.0]]}).encode(), {400}),
        ("json-strings-in-array", "/encode", json.dumps({"tracks": [["a", "b"]]}).encode(), {400}),
        ("json-bools-as-images", "/act", json.dumps({**json.loads(encode(OK["/act"], JSON)),
                                                     "images": [[[[[True] * 3] * 128] * 128] * 2]}).encode(), {400}),
        ("json-duplicate-keys", "/encode", b'{"tracks": 1, "tracks": 2}', {400}),
        ("json-msgpack-body", "/encode", encode(OK["/encode"], MSGPACK), {400}),
    ]


def _check_error(resp, allowed: set[int], field: str | None = None) -> None:
    assert resp.status_code in allowed, f"expected {allowed}, got {resp.status_code}: {resp.text[:300]}"
    err = resp.json()["error"]
    assert set(err) >= {"code", "message", "field", "request_id"}, err
    assert err["request_id"] == resp.headers["x-request-id"]
    assert "Traceback" not in resp.text
    if field is not None:
        assert err["field"] is not None and err["field"].split(".")[0] == field, err


def test_meta_matches(client) -> None:
    meta = client.get("/metadata").json()
    assert {k: meta[k] for k in META_KEYS} == META


@pytest.mark.parametrize("encoding", [JSON, MSGPACK], ids=["json", "msgpack"])
@pytest.mark.parametrize("case", structured_cases(), ids=lambda c: c[0])
def test_structured_bad_input(client, case, encoding) -> None:
    name, path, payload, allowed, field = case
    if encoding == JSON and name in MSGPACK_ONLY:
        pytest.skip("JSON has no dtypes: integer lists are valid floats")
    r = client.post(path, content=encode(payload, encoding), headers={"content-type": encoding})
    _check_error(r, allowed, field)


@pytest.mark.parametrize("case", msgpack_only_cases() + json_only_cases(), ids=lambda c: c[0])
def test_raw_bad_body(client, case) -> None:
    name, path, body, allowed = case
    encoding = MSGPACK if name.startswith("mp-") else JSON
    r = client.post(path, content=body, headers={"content-type": encoding})
    _check_error(r, allowed)


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data; boundary=x",
                                          "application/octet-stream", "application/python-pickle"])
def test_unsupported_content_type(client, content_type) -> None:
    r = client.post("/encode", content=encode(OK["/encode"], JSON), headers={"content-type": content_type})
    _check_error(r, {415})


def test_wrong_methods_and_paths(client) -> None:
    _check_error(client.get("/act"), {405})
    _check_error(client.post("/nope", content=b"{}"), {404})
    _check_error(client.post("/act/../../etc/passwd", content=b"{}"), {404})


def test_oversize_body_and_batch(make_client) -> None:
    """Body limit (413: by Content-Length and while reading a chunked body) and batch limit (400)."""
    with make_client(max_body_bytes=100_000, max_request_batch=4) as c:
        big = encode(valid_payloads(META, batch=8)["/encode"], MSGPACK)
        assert len(big) < 100_000
        _check_error(c.post("/encode", content=big, headers={"content-type": MSGPACK}), {400}, "tracks")
        act = encode(valid_payloads(META, batch=5)["/act"], MSGPACK)
        _check_error(c.post("/act", content=act, headers={"content-type": MSGPACK}), {413})

        def chunks():  # no Content-Length: the limit holds while the body streams in
            for _ in range(50):
                yield b" " * 10_000

        _check_error(c.post("/encode", content=chunks(), headers={"content-type": JSON}), {413})
        check_answer("/encode", c.post("/encode", content=encode(OK["/encode"], MSGPACK),
                                       headers={"content-type": MSGPACK}))


def test_service_answers_correctly_after_corpus(client) -> None:
    """Every endpoint, both encodings, right after the corpus (same app instance: session fixture)."""
    for path in EXPECTED_FIELD:
        for enc in (JSON, MSGPACK):
            check_answer(path, client.post(path, content=encode(OK[path], enc), headers={"content-type": enc}))
    assert client.get("/health").status_code == 200
