"""docker-compose.yml: valid under the Compose Specification, and arranged as the deployment needs
(replicas with healthchecks behind the balancer, the GPU reservation, the job profiles, every
setting a real one and documented)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from deploy_helpers import COMPOSE_FILE, REPO

PROFILES = ["gpu", "libero", "batch"]


def test_compose_file_valid_against_compose_spec_schema():
    pytest.importorskip("check_jsonschema", reason="check-jsonschema is in the dev extra: pip install -e '.[dev]'")
    r = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                        str(COMPOSE_FILE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("env_file", [None, ".env.example"])
def test_docker_compose_config_accepts_every_profile(tmp_path, env_file):
    """The Compose CLI itself resolves the file (interpolation, anchors, profiles); no engine needed."""
    cli = shutil.which("docker-compose")
    if cli is None:
        pytest.skip("docker-compose CLI not installed (Debian: apt-get install -y docker-compose); "
                    "the schema test above still validates the file")
    if env_file is None:  # not the developer's own .env, if any
        env_file = tmp_path / "empty.env"
        env_file.write_text("")
    args = [cli, "-f", str(COMPOSE_FILE), "--project-directory", str(REPO), "--env-file", str(REPO / env_file)]
    for p in PROFILES:
        args += ["--profile", p]
    r = subprocess.run(args + ["config"], capture_output=True, text=True, cwd=tmp_path,
                       env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    import yaml

    resolved = yaml.safe_load(r.stdout)["services"]
    assert set(resolved) == {"amplify", "amplify-gpu", "balancer", "libero", "tokenize"}
    assert resolved["amplify"]["deploy"]["replicas"] == 2
    assert resolved["amplify"]["environment"]["AMPLIFY_MODEL"] == "/models/default"
    # Keys with no value are left out unless set, never passed as "" (an empty API key would be one).
    assert resolved["amplify"]["environment"].get("AMPLIFY_API_KEY") in (None,)
    # Compose leaves the tokenize job's key expansion to the container's shell.
    assert 'AMPLIFY_API_KEY:+--api-key' in resolved["tokenize"]["command"][2]


def _ready_check(healthcheck: dict) -> str:
    test = healthcheck["test"]
    return " ".join(test) if isinstance(test, list) else test


def test_service_replicas_are_healthchecked_on_ready(compose):
    for name in ("amplify", "amplify-gpu"):
        svc = compose["services"][name]
        check = _ready_check(svc["healthcheck"])
        assert "/ready" in check and "urllib.request.urlopen" in check, check
        assert svc["healthcheck"]["start_period"], "loading and warm-up need a start period"
        assert svc["restart"] == "unless-stopped"
        assert "8000" in [str(p) for p in svc["expose"]]
        # The model is mounted read-only at /models and named by AMPLIFY_MODEL under it.
        assert any(v.endswith(":/models:ro") for v in svc["volumes"]), svc["volumes"]
        assert svc["environment"]["AMPLIFY_MODEL"].endswith("/models/default}")
        assert svc["environment"]["AMPLIFY_HOST"] == "0.0.0.0"
    replicas = compose["services"]["amplify"]["deploy"]["replicas"]
    assert re.fullmatch(r"\$\{AMPLIFY_REPLICAS:-(\d+)\}", replicas) and int(replicas.split("-")[1][:-1]) >= 2
    assert compose["services"]["amplify"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert compose["services"]["amplify-gpu"]["build"]["dockerfile"] == "docker/Dockerfile.gpu"


def test_gpu_profile_reserves_nvidia_devices_and_joins_the_pool(compose):
    gpu = compose["services"]["amplify-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert gpu["environment"]["AMPLIFY_DEVICE"].startswith("${AMPLIFY_GPU_DEVICE:-cuda")
    # Same DNS name as the CPU replicas, so nginx's upstream `amplify` resolves to them too.
    assert "amplify" in gpu["networks"]["default"]["aliases"]
    assert "profiles" not in compose["services"]["amplify"], "plain `docker compose up` must start the CPU replicas"


def test_balancer_is_nginx_with_the_repo_config(compose):
    lb = compose["services"]["balancer"]
    image, tag = lb["image"].split(":")
    assert image == "nginx"
    major, minor = (int(x) for x in tag.split("-")[0].split(".")[:2])
    assert (major, minor) >= (1, 27), "`server ... resolve` in an upstream needs nginx >= 1.27.3"
    assert "./docker/nginx/nginx.conf:/etc/nginx/nginx.conf:ro" in lb["volumes"]
    assert any(str(p).endswith(":8080") for p in lb["ports"])
    assert "/ready" in _ready_check(lb["healthcheck"])
    assert lb["depends_on"]["amplify"]["condition"] == "service_started"
    assert "profiles" not in lb


def test_job_profiles_wait_for_a_healthy_balancer(compose):
    libero, tokenize = compose["services"]["libero"], compose["services"]["tokenize"]
    assert libero["profiles"] == ["libero"] and tokenize["profiles"] == ["batch"]
    for job in (libero, tokenize):
        assert job["depends_on"] == {"balancer": {"condition": "service_healthy"}}
        assert job["restart"] == "no"
        assert "AMPLIFY_API_KEY" in job["environment"]
    assert libero["command"][libero["command"].index("--server") + 1] == "http://balancer:8080", \
        "jobs go through the balancer, not to one replica"
    assert tokenize["command"][:2] == ["sh", "-c"]
    script = tokenize["command"][2]
    assert script.startswith("exec amplify tokenize --server http://balancer:8080 ")
    assert '$${AMPLIFY_API_KEY:+--api-key "$$AMPLIFY_API_KEY"}' in script
    assert libero["build"]["dockerfile"] == "docker/Dockerfile.libero"


def _variables(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Z0-9_]+)(?::?-[^}]*)?\}", text))


def test_env_example_documents_every_variable():
    compose_text = COMPOSE_FILE.read_text()
    example = (REPO / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, flags=re.M))
    missing = _variables(compose_text) - documented
    assert not missing, f".env.example lacks {sorted(missing)}"
    # Every AMPLIFY_* passed to the replicas, with or without a value.
    import yaml

    services = yaml.safe_load(compose_text)["services"]
    passed = set(services["amplify"]["environment"]) | set(services["amplify-gpu"]["environment"])
    assert not passed - documented - {"AMPLIFY_HOST", "AMPLIFY_PORT", "AMPLIFY_DEVICE"}
    assert {"AMPLIFY_HOST", "AMPLIFY_PORT", "AMPLIFY_DEVICE"} <= set(re.findall(r"(AMPLIFY_[A-Z_]+)=", example))


def test_replica_settings_are_the_services_settings(compose):
    """Every AMPLIFY_* given to a replica is a field of the service's settings (a misspelled one
    would be silently ignored), and every field of the settings is documented in .env.example."""
    settings = pytest.importorskip("service.settings", reason="the service (branch `service`) is not merged here")
    fields = {f"AMPLIFY_{name.upper()}" for name in settings.ServiceSettings.model_fields}
    for name in ("amplify", "amplify-gpu"):
        unknown = set(compose["services"][name]["environment"]) - fields
        assert not unknown, f"{name}: not settings of amplify serve: {sorted(unknown)}"
    example = (REPO / ".env.example").read_text()
    undocumented = {f for f in fields if f not in example}
    assert not undocumented, f".env.example does not mention {sorted(undocumented)}"


@pytest.mark.parametrize("api_key", [None, "s3cret key"])
def test_tokenize_job_command_gives_the_client_its_arguments(compose, tmp_path, api_key):
    """The job's shell line, as compose hands it to the container ($$ -> $), run by sh with a stand-in
    `amplify` that prints its argv: --api-key appears exactly when AMPLIFY_API_KEY is set."""
    tokenize_script = compose["services"]["tokenize"]["command"][2].replace("$$", "$")
    script = re.sub(r"\$\{(TOKENIZE_\w+):-([^}]*)\}", lambda m: m.group(2), tokenize_script)  # compose's defaults
    fake = tmp_path / "amplify"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"} | ({"AMPLIFY_API_KEY": api_key} if api_key else {})
    argv = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, check=True).stdout.splitlines()
    expected = ["tokenize", "--server", "http://balancer:8080", "--input", "/data/tracks", "--output", "/data/tokens.h5",
                "--concurrency", "8", "--no-progress"] + (["--api-key", api_key] if api_key else [])
    assert argv == expected
