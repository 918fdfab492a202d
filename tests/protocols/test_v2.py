"""KServe v2 / Open Inference Protocol: tritonclient (NVIDIA's, unmodified) drives the service:
server, health and model metadata named as `amplify export --format triton` names them, inference
in binary and JSON tensors equal to /act and /encode, errors, the API key, 8 requests at once."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from tests.protocols.conftest import API_KEY
from tests.service.live import msgpack_body, unpack

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is in the dev extra")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def auth() -> dict[str, str]:
    """Fresh headers per call: tritonclient adds Inference-Header-Content-Length to the dict it is given."""
    return {"Authorization": f"Bearer {API_KEY}"}


MSGPACK = {"content-type": "application/msgpack", "x-api-key": API_KEY}


@pytest.fixture(scope="module")
def triton(proto_server):
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{proto_server.port}", concurrency=8)
    yield client
    client.close()


def _post(server, path: str, fields: dict) -> dict:
    r = server.client.post(path, content=msgpack_body(fields), headers=MSGPACK)
    assert r.status_code == 200, r.text
    return unpack(r.content)


def _tensor(name: str, arr: np.ndarray, binary: bool = True):
    dt = {"uint8": "UINT8", "float32": "FP32", "int64": "INT64"}[arr.dtype.name]
    t = httpclient.InferInput(name, list(arr.shape), dt)
    t.set_data_from_numpy(arr, binary_data=binary)
    return t


def _obs(b: int = 1, size: int = 96, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (b, 2, size, size, 3), dtype=np.uint8), rng.normal(0, 1, (b, 512)).astype(np.float32),
            rng.normal(0, 0.5, (b, 9)).astype(np.float32))


def test_metadata_and_health(triton) -> None:
    assert triton.is_server_live() and triton.is_server_ready()  # open, as /health and /ready
    assert triton.get_server_metadata(headers=auth())["name"] == "amplify-serve"
    for m in ("amplify_act", "amplify_predict_codes", "amplify_encode", "amplify_decode", "amplify_indices_to_codes",
              "amplify_inverse_dynamics"):
        assert triton.is_model_ready(m, headers=auth()) and triton.is_model_ready(m, "1", headers=auth())
    meta = triton.get_model_metadata("amplify_act", headers=auth())
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("images", "FP32", [-1, 2, 128, 128, 3]), ("text_emb", "FP32", [-1, 512]), ("proprio", "FP32", [-1, 9])]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == [
        ("actions", "FP32", [-1, 16, 7]), ("indices", "INT64", [-1, 15])]
    cfg = triton.get_model_config("amplify_encode", headers=auth())
    assert cfg["input"][0] == {"name": "velocities", "data_type": "TYPE_FP32", "dims": [2, 15, 16, 2]}
    assert not triton.is_model_ready("amplify_nope", headers=auth())
    with pytest.raises(InferenceServerException) as e:
        triton.get_model_metadata("amplify_act", "2", headers=auth())
    assert e.value.status() == "404" and "version" in e.value.message()


def test_model_table_matches_the_triton_export(proto_bundle_dir) -> None:
    """Same models, tensor names and order as the exporter's graphs for this bundle (export: amplify_<graph>)."""
    from amplify import AMPLIFY
    from exporters.graphs import GRAPHS, build_graph
    from service.backends.torch_backend import TorchBackend
    from service.protocols.v2 import models

    backend = TorchBackend(AMPLIFY.load(proto_bundle_dir).eval(), {"name": "t", "version": "1", "format": "x"})
    table = models(backend.info, backend.act_inputs, backend.id_inputs)
    for name, spec in GRAPHS.items():
        if spec.optional:
            continue
        wrapper = build_graph(name, backend.model)
        model = table[f"amplify_{name}"]
        assert [t.name for t in model.inputs] == list(getattr(wrapper, "input_names", spec.inputs)), name
        assert [t.name for t in model.outputs] == list(spec.outputs), name


def test_act_and_encode_equal_the_http_endpoints(proto_server, triton) -> None:
    images, emb, proprio = _obs(1, size=96)  # any size, uint8: resized as /act does
    res = triton.infer("amplify_act", [_tensor("images", images), _tensor("text_emb", emb), _tensor("proprio", proprio)],
                       outputs=[httpclient.InferRequestedOutput("actions"), httpclient.InferRequestedOutput("indices")],
                       headers=auth())
    ref = _post(proto_server, "/act", {"images": images, "proprio": proprio, "text_emb": emb})["actions"]
    np.testing.assert_allclose(res.as_numpy("actions"), ref, atol=1e-5)
    codes_ref = _post(proto_server, "/predict_codes", {"images": images, "text_emb": emb})["indices"]
    np.testing.assert_array_equal(res.as_numpy("indices"), codes_ref)
    # FP32 images in JSON tensors, all outputs by default
    f32 = (images.astype(np.float32) / 255).astype(np.float32)
    res = triton.infer("amplify_act", [_tensor("images", f32, False), _tensor("text_emb", emb, False),
                                       _tensor("proprio", proprio, False)], headers=auth())
    np.testing.assert_allclose(res.as_numpy("actions"), ref, atol=1e-5)
    # the ID alone on the act's codes gives the act's actions
    codes = triton.infer("amplify_indices_to_codes", [_tensor("indices", res.as_numpy("indices"))],
                         headers=auth()).as_numpy("codes")
    ida = triton.infer("amplify_inverse_dynamics", [_tensor("images", images), _tensor("proprio", proprio),
                                                    _tensor("codes", codes)], headers=auth()).as_numpy("actions")
    np.testing.assert_allclose(ida, ref, atol=1e-5)

    rng = np.random.default_rng(1)
    tracks = np.cumsum(rng.uniform(-0.05, 0.05, (3, 2, 16, 16, 2)), axis=2).astype(np.float32)
    enc = _post(proto_server, "/encode", {"tracks": tracks, "return_codes": True})
    res = triton.infer("amplify_encode", [_tensor("velocities", np.diff(tracks, axis=2))], headers=auth())
    np.testing.assert_array_equal(res.as_numpy("indices"), enc["indices"])
    np.testing.assert_allclose(res.as_numpy("codes"), enc["codes"], atol=1e-6)
    dec = _post(proto_server, "/decode", {"codes": enc["codes"], "return_logits": True})
    res = triton.infer("amplify_decode", [_tensor("codes", enc["codes"].copy())], headers=auth())
    np.testing.assert_allclose(res.as_numpy("velocities"), dec["velocities"], atol=1e-5)
    assert res.as_numpy("logits").shape == dec["logits"].shape


def test_eight_requests_at_once_and_gzip(proto_server, triton) -> None:
    images, emb, proprio = _obs(8, size=128, seed=5)
    pending = [triton.async_infer("amplify_act", [_tensor("images", images[i:i + 1]), _tensor("text_emb", emb[i:i + 1]),
                                                  _tensor("proprio", proprio[i:i + 1])],
                                  outputs=[httpclient.InferRequestedOutput("actions")], headers=auth()) for i in range(8)]
    got = np.concatenate([p.get_result().as_numpy("actions") for p in pending])
    ref = _post(proto_server, "/act", {"images": images, "proprio": proprio, "text_emb": emb})["actions"]
    np.testing.assert_allclose(got, ref, atol=1e-5)
    res = triton.infer("amplify_act", [_tensor("images", images[:1]), _tensor("text_emb", emb[:1]),
                                       _tensor("proprio", proprio[:1])], headers=auth(),
                       request_compression_algorithm="gzip")
    np.testing.assert_allclose(res.as_numpy("actions"), ref[:1], atol=1e-5)
    metrics = proto_server.client.get("/metrics", headers=auth()).text
    assert 'amplify_requests_total{endpoint="/v2/models/amplify_act/infer",method="POST",status="200"}' in metrics


def test_errors_and_api_key(proto_server, triton) -> None:
    images, emb, proprio = _obs(1)
    inputs = [_tensor("images", images), _tensor("text_emb", emb), _tensor("proprio", proprio)]
    for headers in (None, {"Authorization": "Bearer wrong"}):
        with pytest.raises(InferenceServerException) as e:
            triton.infer("amplify_act", inputs, headers=headers)
        assert e.value.status() == "401" and "API key" in e.value.message()
    bad = [_tensor("images", images), _tensor("text_emb", emb), _tensor("proprio", proprio[:, :4])]
    with pytest.raises(InferenceServerException) as e:
        triton.infer("amplify_act", bad, headers=auth())
    assert e.value.status() == "400" and "proprio" in e.value.message() and "(1, 4)" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        triton.infer("amplify_act", inputs[:2], headers=auth())
    assert e.value.status() == "400" and "proprio" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        triton.infer("amplify_nope", inputs, headers=auth())
    assert e.value.status() == "404"
    c = proto_server.client
    for body, hdrs, status, words in [
        (b"{}", {}, 400, "inputs"),
        (b"not json", {}, 400, "JSON"),
        (json.dumps({"inputs": [{"name": "velocities", "shape": [1, 2], "datatype": "FP32",
                                 "parameters": {"binary_data_size": 8}}]}).encode(), {}, 400, "binary"),
        (b'{"inputs": []}' + b"\0" * 4, {"Inference-Header-Content-Length": "99"}, 400, "Inference-Header"),
        (gzip.compress(b"{}"), {"Content-Encoding": "br"}, 415, "Content-Encoding"),
    ]:
        r = c.post("/v2/models/amplify_encode/infer", content=body, headers={**auth(), **hdrs})
        assert r.status_code == status and words in r.json()["error"], (r.status_code, r.text)
    assert c.get("/act", headers=auth()).status_code == 405  # the HTTP contract is untouched
