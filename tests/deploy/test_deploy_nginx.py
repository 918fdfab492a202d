"""docker/nginx/nginx.conf: the balancer's upstream, passive health, retries, re-resolution; and
the local rendering, which may change nothing but the upstream servers and the listen port."""
from __future__ import annotations

import difflib
import re
import shutil
import subprocess

import pytest

from deploy_helpers import NGINX_CONF


def _directives(conf: str) -> list[str]:
    """Directive lines without comments."""
    lines = (ln.split("#", 1)[0].strip() for ln in conf.splitlines())
    return [ln for ln in lines if ln]


def test_upstream_resolves_replicas_with_passive_health():
    conf = NGINX_CONF.read_text()
    block = re.search(r"upstream amplify \{(.*?)\n    \}", conf, flags=re.S).group(1)
    directives = _directives(block)
    servers = [d for d in directives if d.startswith("server ")]
    assert servers == ["server amplify:8000 resolve max_fails=2 fail_timeout=5s;"]
    assert any(d.startswith("zone ") for d in directives), "`resolve` needs a shared-memory zone"
    assert "least_conn;" in directives
    assert any(d.startswith("keepalive ") for d in directives)
    # Docker's embedded DNS, re-asked every few seconds.
    assert re.search(r"^\s*resolver 127\.0\.0\.11 valid=\d+s", conf, flags=re.M)


def test_proxy_retries_on_the_next_replica_and_answers_in_the_contract_format():
    directives = _directives(NGINX_CONF.read_text())
    assert "proxy_pass http://amplify;" in directives
    retry = next(d for d in directives if d.startswith("proxy_next_upstream "))
    assert set(retry.rstrip(";").split()[1:]) == {"error", "timeout", "http_502", "http_503", "http_504",
                                                  "non_idempotent"}
    assert any(d.startswith("proxy_next_upstream_tries ") for d in directives)
    assert 'proxy_set_header Connection "";' in directives and "proxy_http_version 1.1;" in directives
    assert "proxy_set_header X-Request-ID $amplify_request_id;" in directives
    # No replica: a 503 with Retry-After and the contract's error body, not nginx's HTML page.
    assert "error_page 502 = @no_replica;" in directives
    no_replica = NGINX_CONF.read_text().split("location @no_replica", 1)[1].split("}\n", 1)[0]
    assert "Retry-After" in no_replica and '"error":{"code":"no_replica"' in no_replica and "return 503" in no_replica


def test_local_rendering_changes_only_the_servers_and_the_listen_port(local_stack):
    conf = NGINX_CONF.read_text()
    rendered = local_stack.render_nginx_conf(conf, [("127.0.0.1", 9001), ("127.0.0.1", 9002)], ("127.0.0.1", 9000))
    removed, added = [], []
    for line in difflib.ndiff(conf.splitlines(), rendered.splitlines()):
        if line.startswith("- "):
            removed.append(line[2:].strip())
        elif line.startswith("+ "):
            added.append(line[2:].strip())
    assert removed == ["server amplify:8000 resolve max_fails=2 fail_timeout=5s;", "listen 8080;"]
    assert added == ["server 127.0.0.1:9001 max_fails=2 fail_timeout=5s;",
                     "server 127.0.0.1:9002 max_fails=2 fail_timeout=5s;", "listen 127.0.0.1:9000;"]


def test_rendering_refuses_a_config_without_markers(local_stack):
    with pytest.raises(ValueError, match="markers"):
        local_stack.render_nginx_conf("http { upstream amplify { server a:1; } }", [("127.0.0.1", 1)], ("127.0.0.1", 2))


def test_rendered_config_passes_nginx_t(local_stack, tmp_path):
    if shutil.which("nginx") is None:
        pytest.skip("nginx not installed (Debian: apt-get install -y nginx)")
    rendered = local_stack.render_nginx_conf(NGINX_CONF.read_text(), [("127.0.0.1", 9001), ("127.0.0.1", 9002)],
                                             ("127.0.0.1", 9000))
    (tmp_path / "temp").mkdir()
    (tmp_path / "nginx.conf").write_text(rendered)
    r = subprocess.run(["nginx", "-t", "-p", f"{tmp_path}/", "-c", str(tmp_path / "nginx.conf")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
