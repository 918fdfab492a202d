"""docker/nginx/nginx.conf forwards WebSockets (openpi's policy protocol at ``/`` and ``/openpi``):
Debian's nginx runs the image's configuration (rendered for local ports, as docker/local_stack.py
does) in front of a minimal Starlette WebSocket echo server, and a client talks through it. The
service's own WebSocket route behind the same nginx: test_deploy_local_stack.py."""
from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from deploy_helpers import NGINX_CONF

HTTP_READ_TIMEOUT_S = 2

websockets_sync = pytest.importorskip("websockets.sync.client", reason="the websockets package is not installed")


def _location(conf: str, head: str) -> list[str]:
    """The directive lines (comments dropped) of the location block whose header line is ``head``."""
    body = conf.split(head, 1)[1].split("\n        }\n", 1)[0]
    return [d for d in (ln.split("#", 1)[0].strip() for ln in body.splitlines()) if d]


def test_websocket_location_upgrades_and_outlives_the_service_idle_timeout():
    conf = NGINX_CONF.read_text()
    assert re.search(r'map \$http_upgrade \$connection_upgrade \{\s*default upgrade;\s*""\s*"";\s*\}', conf)
    ws = _location(conf, "location ~ ^/(openpi)?$ {")
    assert "proxy_pass http://amplify;" in ws and "proxy_http_version 1.1;" in ws
    assert "proxy_set_header Upgrade $http_upgrade;" in ws
    assert "proxy_set_header Connection $connection_upgrade;" in ws
    read = next(int(d.split()[1].rstrip("s;")) for d in ws if d.startswith("proxy_read_timeout "))
    # Above the service's WebSocket idle timeout (600 s by default), so the service closes idle ones.
    assert read >= 1200, read
    # The HTTP location keeps Connection "" (keep-alive to the replicas) and its 60 s timeout.
    http = _location(conf, "location / {")
    assert 'proxy_set_header Connection "";' in http and "proxy_read_timeout 60s;" in http


def _echo_app():
    """A WebSocket echo at / and /openpi whose first frame reports the request headers it got."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(json.dumps({"path": ws.url.path, "headers": dict(ws.headers)}))
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                if msg.get("bytes") is not None:
                    await ws.send_bytes(msg["bytes"])
                else:
                    await ws.send_text(msg["text"])
        except WebSocketDisconnect:
            return

    async def headers(request) -> JSONResponse:
        return JSONResponse(dict(request.headers))

    async def slow(request) -> JSONResponse:
        await asyncio.sleep(float(request.query_params["s"]))
        return JSONResponse({"slept": True})

    return Starlette(routes=[WebSocketRoute("/", echo), WebSocketRoute("/openpi", echo),
                             Route("/headers", headers), Route("/slow", slow)])


@pytest.fixture(scope="module")
def balancer(local_stack, tmp_path_factory) -> Iterator[str]:
    """nginx with the image's configuration in front of the echo server; yields its host:port."""
    if shutil.which("nginx") is None:
        pytest.skip("nginx not installed (Debian: apt-get install -y nginx)")
    import uvicorn

    backend_port, port = local_stack.free_port(), local_stack.free_port()
    server = uvicorn.Server(uvicorn.Config(_echo_app(), host="127.0.0.1", port=backend_port, log_level="warning",
                                           ws="websockets-sansio"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    prefix = Path(tmp_path_factory.mktemp("nginx-ws"))
    (prefix / "temp").mkdir()
    conf = local_stack.render_nginx_conf(NGINX_CONF.read_text(), [("127.0.0.1", backend_port)], ("127.0.0.1", port))
    # The HTTP location's read timeout cut from 60 s to HTTP_READ_TIMEOUT_S, so that a test can show
    # in seconds that a WebSocket outlives it (the WebSocket location keeps its own 3600 s).
    head, http_block = conf.split("        location / {", 1)
    http_block, tail = http_block.split("\n        }\n", 1)
    assert "proxy_read_timeout 60s;" in http_block
    conf = (head + "        location / {" + http_block.replace("proxy_read_timeout 60s;",
                                                               f"proxy_read_timeout {HTTP_READ_TIMEOUT_S}s;")
            + "\n        }\n" + tail)
    (prefix / "nginx.conf").write_text(conf)
    proc = subprocess.Popen(["nginx", "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=open(prefix / "error.log", "wb"), start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        local_stack.wait_http(f"http://127.0.0.1:{port}/lb-health", 30, proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(15)
        server.should_exit = True
        thread.join(15)


@pytest.mark.parametrize("path", ["/", "/openpi"])
def test_websocket_through_nginx(balancer, path):
    with websockets_sync.connect(f"ws://{balancer}{path}", additional_headers={"Authorization": "Api-Key k1"},
                                 max_size=8 * 2**20, open_timeout=10) as ws:
        first = json.loads(ws.recv(timeout=10))
        assert first["path"] == path
        got = first["headers"]
        assert got["upgrade"].lower() == "websocket" and "upgrade" in got["connection"].lower()
        assert got["authorization"] == "Api-Key k1"  # openpi's API-key header reaches the replica
        assert got.get("x-request-id")  # nginx's request id, as for HTTP requests
        payload = bytes(range(256)) * 4096  # 1 MiB binary frame, as an observation with images would be
        for i in range(5):
            ws.send(payload[i:])
            assert ws.recv(timeout=10) == payload[i:]
        ws.send("text frame")
        assert ws.recv(timeout=10) == "text frame"


def test_plain_http_through_nginx_keeps_upstream_keepalive(balancer):
    import httpx

    got = httpx.get(f"http://{balancer}/headers", timeout=10).json()
    assert "upgrade" not in got and got.get("connection", "") == "", got
    # Asking for an upgrade outside the WebSocket location is not passed on.
    got = httpx.get(f"http://{balancer}/headers", headers={"Upgrade": "websocket", "Connection": "Upgrade"},
                    timeout=10).json()
    assert "upgrade" not in got and got.get("connection", "") == "", got


def test_an_idle_websocket_outlives_the_http_read_timeout(balancer):
    """Silent longer than the HTTP location's read timeout (which answers a slow request with the
    contract's 504), the WebSocket stays open and usable: its location has its own timeout."""
    import httpx

    r = httpx.get(f"http://{balancer}/slow", params={"s": HTTP_READ_TIMEOUT_S + 1.5}, timeout=30)
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout", r.text
    with websockets_sync.connect(f"ws://{balancer}/", open_timeout=10) as ws:
        ws.recv(timeout=10)
        time.sleep(HTTP_READ_TIMEOUT_S + 1.5)
        ws.send(b"still here")
        assert ws.recv(timeout=10) == b"still here"
