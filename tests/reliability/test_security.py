"""Security: nobody takes over the host by sending a file (pickled checkpoints are refused and their
payload never runs; no request field is a path), the API key guards every model endpoint (compared in
constant time) while /health stays open, and the size limits hold."""
from __future__ import annotations

import ast
import inspect
import os
import pickle
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from tests.reliability.harness import EXPECTED_FIELD, JSON, MSGPACK, REPO, check_answer, encode, free_port, valid_payloads

pytestmark = pytest.mark.timeout(240)  # a hang is a failure, not a stuck suite


# -- pickled payloads -----------------------------------------------------------------------------------
class Payload:
    """Unpickling this runs ``exec``, which writes ``marker`` (what an attacker's checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('the payload ran')",)


def _evil_files(root: Path) -> dict[str, tuple[Path, Path]]:
    """name -> (checkpoint file, the marker its payload would create)."""
    files = {}
    m = root / "marker-zip"
    zipped = root / "evil.pt"  # torch.save's zip format, shaped like an original checkpoint
    torch.save({"model": {"w": torch.zeros(2)}, "config": {"x": Payload(m)}}, zipped)
    files["torch-zip"] = (zipped, m)
    m = root / "marker-legacy"
    legacy = root / "evil_legacy.pt"  # a bare pickle (torch's legacy format)
    legacy.write_bytes(pickle.dumps({"model": Payload(m), "config": {}}, protocol=2))
    files["bare-pickle"] = (legacy, m)
    m = root / "marker-state"
    state = root / "evil_state.pt"  # the payload inside the state dict
    torch.save({"model": {"w": Payload(m)}}, state)
    files["in-state-dict"] = (state, m)
    return files


def test_payload_would_run_if_unpickled(tmp_path) -> None:
    """Control: the files really carry code (a plain unpickler runs it, in a separate process)."""
    for name, (path, marker) in _evil_files(tmp_path).items():
        code = ("import torch, sys; sys.path.insert(0, %r); torch.load(%r, weights_only=False)"
                % (str(REPO), str(path)))
        subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
        assert marker.read_text() == "the payload ran", name


def test_pickled_payload_refused_by_library(tmp_path) -> None:
    from amplify.checkpoints import CheckpointError, load_original
    from amplify.loading import load_forward_dynamics, load_inverse_dynamics, load_motion_tokenizer
    from amplify.policy import AMPLIFY

    for name, (path, marker) in _evil_files(tmp_path).items():
        for load in (load_original, AMPLIFY.load, load_motion_tokenizer, load_forward_dynamics, load_inverse_dynamics):
            with pytest.raises(CheckpointError) as e:
                load(path)
            assert str(path) in str(e.value), (name, load.__name__, e.value)
            assert "refused" in str(e.value) and "weights_only" not in str(e.value), e.value  # no unsafe advice
            assert not marker.exists(), f"{name}: the payload ran in {load.__name__}"


def test_pickled_payload_refused_by_serve(tmp_path) -> None:
    """`amplify serve --model evil.pt`: non-zero exit, a message naming the file, and no marker."""
    files = _evil_files(tmp_path)
    procs = {name: subprocess.Popen(
        [sys.executable, "-m", "amplify", "serve", "--model", str(path), "--port", str(free_port())],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True) for name, (path, _) in files.items()}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=120)
        path, marker = files[name]
        assert proc.returncode not in (0, None), (name, out[-1000:])
        assert str(path) in out.strip().splitlines()[-1], (name, out[-1000:])
        assert not marker.exists(), f"{name}: the payload ran in amplify serve"


# -- API key ----------------------------------------------------------------------------------------------
KEY = "s3cret-Key_with.symbols"
OPEN = ("/health", "/ready")
GUARDED_GET = ("/metadata", "/metrics")


def test_api_key_required_on_every_model_endpoint(make_client) -> None:
    with make_client(api_key=KEY) as c:
        for path in OPEN:
            assert c.get(path).status_code == 200, path
        meta = c.get("/metadata", headers={"X-API-Key": KEY}).json()
        assert KEY not in str(meta)
        payloads = valid_payloads(meta)
        for path in GUARDED_GET:
            for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": f"Basic {KEY}"}):
                assert c.get(path, headers=headers).status_code == 401, (path, headers)
            assert c.get(path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        for path in EXPECTED_FIELD:
            body = encode(payloads[path], MSGPACK)
            for headers in ({}, {"X-API-Key": ""}, {"X-API-Key": KEY[:-1]}, {"X-API-Key": KEY + "x"},
                            {"Authorization": "Bearer"}, {"Authorization": f"Bearer {KEY.upper()}"},
                            {"x-api-key": "wrong", "Authorization": f"Bearer {KEY}"}):
                r = c.post(path, content=body, headers={"content-type": MSGPACK, **headers})
                assert r.status_code == 401, (path, headers, r.status_code)
                err = r.json()["error"]
                assert err["code"] == "unauthorized" and err["request_id"] == r.headers["x-request-id"]
                assert KEY not in r.text
            for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}, {"authorization": f"bearer {KEY}"}):
                check_answer(path, c.post(path, content=body, headers={"content-type": MSGPACK, **headers}))
        # 401 comes before the body is even looked at: no key + a bad body is still 401
        assert c.post("/act", content=b"\x00garbage", headers={"content-type": MSGPACK}).status_code == 401


def test_api_key_compared_in_constant_time() -> None:
    """The key check uses hmac/secrets.compare_digest and never ``==`` on the key."""
    from service import middleware

    source = inspect.getsource(middleware)
    assert "compare_digest(" in source
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
            names = {ast.unparse(x) for x in [node.left, *node.comparators]}
            assert not any("api_key" in n or n == "given" for n in names), ast.unparse(node)


# -- no request field is a path ----------------------------------------------------------------------------
PATHLIKE = ("path", "file", "dir", "model", "checkpoint", "url", "uri", "weights", "bundle", "load")


def _properties(schema: dict, components: dict, seen: set[str] | None = None):
    """(name, schema) of every property reachable from ``schema`` (following $ref)."""
    seen = seen if seen is not None else set()
    if "$ref" in schema:
        ref = schema["$ref"].split("/")[-1]
        if ref in seen:
            return
        seen.add(ref)
        yield from _properties(components[ref], components, seen)
        return
    for name, sub in schema.get("properties", {}).items():
        yield name, sub
        yield from _properties(sub, components, seen)
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            yield from _properties(sub, components, seen)
    if isinstance(schema.get("items"), dict):
        yield from _properties(schema["items"], components, seen)


def test_openapi_has_no_path_fields(client) -> None:
    spec = client.get("/openapi.json").json()
    components = spec.get("components", {}).get("schemas", {})
    checked = 0
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for param in op.get("parameters", []):  # only a closed set (KServe v2's model name, version)
                if param["in"] != "path" or not param.get("schema", {}).get("enum"):
                    raise AssertionError(f"{method.upper()} {path} takes a {param['in']} parameter {param['name']!r}")
            for media, content in op.get("requestBody", {}).get("content", {}).items():
                schema = content["schema"]
                assert schema.get("additionalProperties") is False, (path, media, "unknown fields must be refused")
                for name, sub in _properties(schema, components):
                    checked += 1
                    assert not any(w in name.lower() for w in PATHLIKE), f"{path}: field {name!r} looks like a path"
                    assert sub.get("format") not in ("uri", "path", "uri-reference"), (path, name, sub)
    assert checked > 20


def test_path_in_request_is_refused_without_file_access(client, tmp_path) -> None:
    """A path in an unknown field, the query string or the text is refused or ignored, and the request
    opens no file (an audit hook records every ``open`` in this process while it is handled)."""
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    opened: list[str] = []
    recording = threading.Event()

    def hook(event: str, args: tuple) -> None:
        if recording.is_set() and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            opened.append(os.fsdecode(args[0]))

    sys.addaudithook(hook)  # cannot be removed; gated by `recording`
    payloads = valid_payloads(client.get("/metadata").json())
    attempts = []
    for target in (str(secret), "/etc/passwd", "../../../../etc/passwd", "file:///etc/passwd"):
        for field in ("model", "path", "checkpoint", "text_encoder", "file"):
            attempts.append(("/act", {**payloads["/act"], field: target}, "", {400}))
        attempts.append(("/act", {**{k: v for k, v in payloads["/act"].items() if k != "text_emb"}, "text": [target]},
                         "", {404}))
        attempts.append(("/encode", payloads["/encode"], f"?model={target}&path={target}", {200}))
    recording.set()
    try:
        for path, payload, query, allowed in attempts:
            for enc in (JSON, MSGPACK):
                r = client.post(path + query, content=encode(payload, enc), headers={"content-type": enc})
                assert r.status_code in allowed, (path, query, r.status_code, r.text[:200])
                assert "do not read" not in r.text and "root:" not in r.text
    finally:
        recording.clear()
    touched = [p for p in opened if "passwd" in p or "secret" in p]
    assert not touched, touched
    assert client.get("/docs/../../etc/passwd").status_code == 404


# -- limits ------------------------------------------------------------------------------------------------
def _raw(port: int, data: bytes, read_timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and len(chunks) > 0 and b"}" in chunk:
                    break
        except socket.timeout:
            pass
        return b"".join(chunks)


def test_limits_on_a_live_server(live_server) -> None:
    """A declared 10 GB body is refused with 413 before any of it is sent; a 2 MB header and a
    64-view or 4096-pixel image are refused; the server then answers normally."""
    port = live_server.port
    head = (f"POST /act HTTP/1.1\r\nHost: x\r\nContent-Type: {MSGPACK}\r\nContent-Length: {10 * 2**30}\r\n\r\n").encode()
    answer = _raw(port, head)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    try:  # the HTTP parser bounds a request's head (h11: a 400, or the connection is reset)
        answer = _raw(port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2_000_000 + b"\r\n\r\n")
        assert answer == b"" or answer.split(b" ")[1][:1] == b"4", answer[:200]
    except ConnectionResetError:
        pass
    meta = httpx.get(live_server.url + "/metadata", timeout=10).json()
    act = valid_payloads(meta)["/act"]

    for images in (np.zeros((1, 64, 8, 8, 3), np.uint8), np.zeros((1, 2, 4096, 8, 3), np.uint8),
                   np.zeros((1, 2, 8, 4096, 3), np.uint8)):
        r = httpx.post(live_server.url + "/act", content=encode({**act, "images": images}, MSGPACK),
                       headers={"content-type": MSGPACK}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["field"] == "images", r.text[:200]
    check_answer("/act", httpx.post(live_server.url + "/act", content=encode(act, MSGPACK),
                                    headers={"content-type": MSGPACK}, timeout=30))


def test_request_id_cannot_inject(client) -> None:
    """A client's X-Request-ID is echoed only when it is short and plain; otherwise a fresh one is used
    (it goes into logs and error bodies)."""
    for bad in ("a" * 129, "id with spaces", "id\"},{\"x\":1", "<script>", "%0d%0aSet-Cookie:x"):
        r = client.get("/health", headers={"x-request-id": bad})
        assert r.status_code == 200 and r.headers["x-request-id"] != bad
        assert len(r.headers["x-request-id"]) == 32
    r = client.post("/act", content=b"{}", headers={"content-type": JSON, "x-request-id": "robot-3:step.17"})
    assert r.headers["x-request-id"] == "robot-3:step.17" == r.json()["error"]["request_id"]
