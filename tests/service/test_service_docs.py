"""The OpenAPI pages work offline: /docs and /redoc load Swagger UI and ReDoc from the service itself
(no CDN), their assets need no API key, and a headless browser renders the operations."""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings
from tests.service.live import LiveServer


class _AssetLinks(HTMLParser):
    """Every URL a page loads: script src, link href, img src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and (tag, name) in {("script", "src"), ("link", "href"), ("img", "src")}:
                self.urls.append(value)


def _held_factory(release: threading.Event):
    """A backend factory that never finishes loading in the test's lifetime: the docs need no model."""
    def factory(settings):
        release.wait(300)
        raise RuntimeError("released")
    return factory


@pytest.fixture()
def client():
    # No lifespan (TestClient outside `with`): nothing loads; /docs and /openapi.json need no model.
    return TestClient(create_app(ServiceSettings(api_key="sekret")))


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_pages_load_only_local_assets_that_the_service_serves(client, page):
    r = client.get(page)
    assert r.status_code == 200, r.text
    links = _AssetLinks()
    links.feed(r.text)
    scripts = [u for u in links.urls if u.endswith(".js")]
    assert scripts, f"{page} loads no script: {links.urls}"
    for url in links.urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{page} loads {url} from another host"
        asset = client.get(url)  # no API key: the pages and their assets are open, as /docs was
        assert asset.status_code == 200, (url, asset.status_code)
        kind = {".js": "javascript", ".css": "text/css", ".png": "image/png"}[url[url.rindex("."):]]
        assert kind in asset.headers["content-type"], (url, asset.headers["content-type"])
        assert len(asset.content) > 1000, url
    # Nothing in the page's own code points at a CDN either (fastapi's default is jsdelivr).
    assert "cdn." not in r.text and "googleapis" not in r.text
    assert "/openapi.json" in r.text


def test_swagger_ui_is_version_5_which_renders_openapi_3_1(client):
    """FastAPI writes OpenAPI 3.1, which Swagger UI renders from version 5 on (4.x refuses it)."""
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    page = client.get("/docs").text
    js = next(u for u in re.findall(r"src=['\"]([^'\"]+\.js)['\"]", page) if "swagger-ui-bundle" in u)
    head = client.get(js).text
    versions = set(re.findall(r'version:"(5\.\d+\.\d+)"|"(5\.\d+\.\d+)"', head))
    assert versions, "no Swagger UI 5.x version string in the bundle"


def test_assets_are_open_but_confined_to_the_asset_directory(client):
    """The API-key exemption of the asset prefix reaches only the static files, never a route."""
    assert client.post("/docs/assets/../act", json={}).status_code in (401, 404)
    assert client.get("/docs/assets/..%2f..%2fservice%2fapp.py").status_code == 404
    assert client.get("/docs/assets/missing.js").status_code == 404
    assert client.get("/metadata").status_code == 401  # the key is still required elsewhere


def test_headless_browser_renders_the_operations():
    """Chromium, with every host name but the test server's unresolvable, renders /docs's operations."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no headless Chromium (Debian: apt-get install -y chromium)")
    release = threading.Event()
    try:
        with LiveServer(ServiceSettings(), _held_factory(release), wait_ready=False) as server:
            cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   "--no-first-run", "--disable-extensions", "--disable-background-networking",
                   # Any host other than the service's address fails to resolve: a CDN load would fail.
                   "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                   "--virtual-time-budget=15000", "--dump-dom", f"{server.url}/docs"]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        release.set()
    dom = r.stdout
    assert r.returncode == 0 and "swagger-ui" in dom, (r.returncode, r.stderr[-2000:])
    # Swagger UI rendered the spec: one block per operation, with its path.
    assert "opblock" in dom, "Swagger UI did not render any operation"
    for path in ("/act", "/encode", "/decode", "/predict_codes", "/predict_traj", "/metadata"):
        assert f'data-path="{path}"' in dom or f">{path}<" in dom, f"{path} not rendered"
    assert "AMPLIFY inference service" in dom
