"""The client's own logic against an in-process fake transport: codecs, batch axis, retries with
Retry-After, typed errors, the metadata check. (Live-server tests are in test_live.py.)"""
from __future__ import annotations

import asyncio
import httpx
import msgpack
import numpy as np
import pytest

from clients import (
    AmplifyClient, AsyncAmplifyClient, BadRequestError, ConnectionFailedError, IncompatibleModelError,
    OverloadedError, RetryPolicy,
)
from clients.codec import MSGPACK, decode_body, encode_body

META = {"model": {"name": "m", "version": "1", "format": "x"}, "views": ["agentview", "eye_in_hand"],
        "image_size": [128, 128], "action_dim": 7, "proprio_dim": 9, "action_horizon": 4}


def _unpack(request: httpx.Request) -> dict:
    body = decode_body(request.content, request.headers["content-type"])
    return {k: np.asarray(v) if isinstance(v, list) and k != "text" else v for k, v in body.items()}


def _reply(request: httpx.Request, status: int, body: dict, headers: dict | None = None) -> httpx.Response:
    ctype = request.headers.get("accept", "application/json")
    return httpx.Response(status, content=encode_body(body, ctype), headers={"content-type": ctype, **(headers or {})})


def fake_server(log: list, fail_first: int = 0, fail_status: int = 503, retry_after: str | None = "0"):
    state = {"fails": fail_first}

    def handler(request: httpx.Request) -> httpx.Response:
        log.append(request)
        if request.url.path == "/metadata":
            return httpx.Response(200, json=META)
        if state["fails"] > 0:
            state["fails"] -= 1
            headers = {"retry-after": retry_after} if retry_after is not None else {}
            return _reply(request, fail_status, {"error": {"code": "overloaded", "message": "queue full",
                                                           "field": None, "request_id": "r1"}}, headers)
        body = _unpack(request)
        if request.url.path == "/act":
            b = body["images"].shape[0]
            return _reply(request, 200, {"actions": np.full((b, 4, 7), 0.5, np.float32)})
        if request.url.path == "/encode":
            x = body["tracks"]
            if x.shape[1:] != (2, 16, 16, 2):
                return _reply(request, 400, {"error": {"code": "bad_shape", "message": "tracks: expected (b, 2, 16, 16, 2)",
                                                       "field": "tracks", "request_id": "r2"}})
            return _reply(request, 200, {"indices": np.arange(x.shape[0] * 5, dtype=np.int64).reshape(-1, 5)})
        return httpx.Response(404)

    return httpx.MockTransport(handler)


def test_msgpack_ndarray_roundtrip_is_exact_and_never_pickles():
    arrays = {"a": np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32),
              "b": np.arange(6, dtype=np.int64).reshape(2, 3), "c": np.zeros((1, 2, 8, 8, 3), np.uint8),
              "big_endian": np.arange(3, dtype=">f8")}
    raw = encode_body(arrays, MSGPACK)
    wire = msgpack.unpackb(raw, raw=False)
    assert wire["a"] == {"__ndarray__": True, "dtype": "<f4", "shape": [2, 3, 4], "data": arrays["a"].tobytes()}
    assert wire["big_endian"]["dtype"] == "<f8"
    back = decode_body(raw, MSGPACK)
    for k, v in arrays.items():
        assert back[k].shape == v.shape and np.array_equal(back[k], v)
    bad = msgpack.packb({"x": {"__ndarray__": True, "dtype": "|O", "shape": [1], "data": b"\0" * 8}})
    with pytest.raises(ValueError, match="refusing"):
        decode_body(bad, MSGPACK)
    short = msgpack.packb({"x": {"__ndarray__": True, "dtype": "<f4", "shape": [4], "data": b"\0" * 8}})
    with pytest.raises(ValueError, match="bytes"):
        decode_body(short, MSGPACK)


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_single_observation_gets_and_loses_batch_axis(fmt):
    log: list = []
    c = AmplifyClient("http://x", format=fmt, transport=fake_server(log), expect_action_dim=7,
                      expect_views=["agentview", "eye_in_hand"], expect_image_size=(128, 128))
    img = np.zeros((2, 128, 128, 3), np.uint8)
    single = c.act(img, np.zeros(9), text="pick")
    assert single.shape == (4, 7) and single.dtype == np.float32
    sent = _unpack(log[-1])
    assert sent["images"].shape == (1, 2, 128, 128, 3) and sent["proprio"].shape == (1, 9) and sent["text"] == ["pick"]
    if fmt == "msgpack":
        assert sent["images"].dtype == np.uint8
    batch = c.act(np.zeros((3, 2, 128, 128, 3), np.float32), np.zeros((3, 9)), text=["a", "b", "c"])
    assert batch.shape == (3, 4, 7)
    by_view = c.act({"eye_in_hand": img[1], "agentview": img[0] + 1}, np.zeros(9), text="pick")
    assert by_view.shape == (4, 7)
    assert (_unpack(log[-1])["images"][0, 0] == 1).all()  # stacked in the model's view order
    with pytest.raises(ValueError, match="proprio"):
        c.act(img, np.zeros((2, 9)), text="pick")


def test_retries_on_503_then_succeeds_honouring_retry_after():
    log: list = []
    c = AmplifyClient("http://x", transport=fake_server(log, fail_first=2, retry_after="0"),
                      retry=RetryPolicy(retries=3, backoff=5.0))  # backoff 5 s would be slow: Retry-After 0 wins
    out = c.encode(np.zeros((2, 16, 16, 2), np.float32))
    assert out["indices"].shape == (5,)
    assert [r.url.path for r in log].count("/encode") == 3


def test_retries_spent_raise_overloaded_with_details():
    log: list = []
    c = AmplifyClient("http://x", transport=fake_server(log, fail_first=10, fail_status=429, retry_after=None),
                      retry=RetryPolicy(retries=2, backoff=0.001))
    with pytest.raises(OverloadedError) as e:
        c.encode(np.zeros((2, 16, 16, 2), np.float32))
    assert e.value.status == 429 and e.value.code == "overloaded" and e.value.request_id == "r1"
    assert [r.url.path for r in log].count("/encode") == 3


def test_backoff_is_exponential_and_capped():
    p = RetryPolicy(backoff=0.5, max_backoff=3.0, jitter=0.0)
    assert [p.wait(k, None) for k in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert p.wait(0, 7.0) == 3.0 and p.wait(3, 0.25) == 0.25


def test_server_400_becomes_typed_error_with_field():
    c = AmplifyClient("http://x", transport=fake_server([]))
    with pytest.raises(BadRequestError) as e:
        c.encode(np.zeros((2, 9, 16, 2), np.float32))
    assert e.value.field == "tracks" and e.value.status == 400 and "expected" in e.value.message


def test_metadata_mismatch_is_refused_at_connect():
    with pytest.raises(IncompatibleModelError, match="action_dim.*image_size|image_size.*action_dim"):
        AmplifyClient("http://x", transport=fake_server([]), expect_image_size=(224, 224), expect_action_dim=6)
    with pytest.raises(IncompatibleModelError, match="views"):
        AmplifyClient("http://x", transport=fake_server([]), expect_views=["agentview"])


def test_connection_errors_are_retried_then_typed():
    calls = []

    def handler(request):
        calls.append(1)
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ConnectionFailedError):
        AmplifyClient("http://x", transport=httpx.MockTransport(handler), retry=RetryPolicy(retries=2, backoff=0.001))
    assert len(calls) == 3


def test_api_key_sent_as_bearer():
    log: list = []
    c = AmplifyClient("http://x", api_key="s3cret", transport=fake_server(log))
    c.encode(np.zeros((2, 16, 16, 2), np.float32))
    assert all(r.headers["authorization"] == "Bearer s3cret" for r in log)


def test_async_client_concurrent_calls():
    log: list = []

    async def main():
        async with AsyncAmplifyClient("http://x", transport=fake_server(log), expect_action_dim=7) as c:
            outs = await asyncio.gather(*[c.act(np.zeros((2, 8, 8, 3), np.uint8), np.zeros(9), text_emb=np.zeros(4))
                                          for _ in range(5)])
        return outs

    outs = asyncio.run(main())
    assert len(outs) == 5 and all(o.shape == (4, 7) for o in outs)
    assert [r.url.path for r in log].count("/metadata") == 1


def test_errors_survive_pickling_between_processes():
    import pickle

    e = BadRequestError("tracks: wrong shape", status=400, code="invalid_input", field="tracks", request_id="r9")
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is BadRequestError and (back.status, back.field, back.request_id) == (400, "tracks", "r9")
    assert str(back) == str(e)


def test_expectations_check_the_metadata_that_model_info_describes():
    """The client's checks read the /metadata keys the one model description (amplify.info.ModelInfo) writes."""
    from amplify.info import ModelInfo
    from amplify.presets import small
    from clients import Expectations, IncompatibleModelError

    meta = {"model": {"name": "small"}, **ModelInfo.from_config(small()).as_metadata()}
    Expectations(views=meta["views"], image_size=tuple(meta["image_size"]), action_dim=meta["action_dim"],
                 proprio_dim=meta["proprio_dim"]).check(meta)
    with pytest.raises(IncompatibleModelError, match=r"action_dim: model gives 7, client executes 6; proprio_dim: model wants 9, client feeds 8"):
        Expectations(proprio_dim=8, action_dim=6).check(meta)
