"""deploy/kubernetes: every manifest validates offline against the Kubernetes schemas
(``kubernetes-validate``, strict: unknown fields are errors) for the oldest and newest Kubernetes
versions it knows, the kustomize overlays render (``kubectl kustomize`` or ``kustomize``), the KServe
resources validate against deploy/kubernetes/kserve/schema/kserve.schema.json (made from KServe's SDK,
with the Kubernetes types inside checked by the same Kubernetes definitions), and the probes, ports
and AMPLIFY_* variables are ones that ``amplify serve`` really has."""
from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

from deploy_helpers import DOCKER, REPO

yaml = pytest.importorskip("yaml", reason="PyYAML is in the dev extra: pip install -e '.[dev]'")
kv = pytest.importorskip("kubernetes_validate.utils",
                         reason="kubernetes-validate is in the dev extra: pip install -e '.[dev]'")

K8S_DIR = REPO / "deploy" / "kubernetes"
BASE = K8S_DIR / "base"
OVERLAYS = sorted(p.name for p in (K8S_DIR / "overlays").iterdir() if (p / "kustomization.yaml").exists())
KSERVE = sorted((K8S_DIR / "kserve").glob("*.yaml"))
KSERVE_SCHEMA = K8S_DIR / "kserve" / "schema" / "kserve.schema.json"
# The oldest Kubernetes these manifests target (PDB unhealthyPodEvictionPolicy: 1.27) and the newest
# the validator knows.
VERSIONS = ["1.28.0", kv.latest_version()]


def _load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@lru_cache(maxsize=1)
def _kustomize() -> tuple[str, ...] | None:
    """``kustomize build``, else ``kubectl kustomize`` when its kustomize is v4 or newer (the overlays
    use `labels` and `patches`; Debian's kubectl 1.20 bundles kustomize 2.0), else None."""
    if shutil.which("kustomize"):
        return ("kustomize", "build")
    if shutil.which("kubectl"):
        r = subprocess.run(["kubectl", "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=60)
        version = json.loads(r.stdout or "{}").get("kustomizeVersion", "") if r.returncode == 0 else ""
        if re.match(r"v([4-9]|\d\d)\.", version):
            return ("kubectl", "kustomize")
    return None


@lru_cache(maxsize=None)
def _render(overlay: str) -> tuple[dict, ...]:
    cmd = _kustomize()
    if cmd is None:
        pytest.skip("neither kustomize nor a kubectl with kustomize >= v4 is installed: the overlays are not rendered")
    r = subprocess.run([*cmd, str(K8S_DIR / "overlays" / overlay)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return tuple(d for d in yaml.safe_load_all(r.stdout) if d)


def _base_resources() -> list[dict]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return [d for f in kustomization["resources"] for d in _load(BASE / f)]


def _by_kind(resources, kind: str) -> dict:
    (found,) = [r for r in resources if r["kind"] == kind]
    return found


def _k8s_errors(resource: dict, version: str) -> str | None:
    try:
        kv.validate(resource, version, strict=True)
    except kv.ValidationError as e:
        return f"{'.'.join(str(p) for p in e.path)}: {e.message}"
    return None


# -- Kubernetes schemas --------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_base_manifests_validate(version):
    resources = _base_resources()
    assert {r["kind"] for r in resources} == {"Deployment", "Service", "HorizontalPodAutoscaler",
                                               "PodDisruptionBudget", "PersistentVolumeClaim"}
    for r in resources:
        assert _k8s_errors(r, version) is None, (r["kind"], _k8s_errors(r, version))


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", VERSIONS)
def test_overlays_render_and_validate(overlay, version):
    resources = _render(overlay)
    for r in resources:
        assert _k8s_errors(r, version) is None, (overlay, r["kind"], _k8s_errors(r, version))
    kinds = sorted(r["kind"] for r in resources)
    expected = ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    if overlay != "baked-model":
        expected.append("PersistentVolumeClaim")
    assert kinds == sorted(expected)


def test_the_validator_catches_a_misspelt_field():
    deployment = copy.deepcopy(_by_kind(_base_resources(), "Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["paht"] = container["readinessProbe"]["httpGet"].pop("path")
    assert "paht" in (_k8s_errors(deployment, VERSIONS[-1]) or "")
    deployment = copy.deepcopy(_by_kind(_base_resources(), "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eight thousand"
    assert "containerPort" in (_k8s_errors(deployment, VERSIONS[-1]) or "")


# -- KServe ----------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _kserve_validator():
    import jsonschema
    from referencing import Registry, Resource

    k8s = kv.schema_contents(f"kubernetes-json-schema/v{VERSIONS[-1]}-local-strict/_definitions.json", VERSIONS[-1])
    schema = json.loads(KSERVE_SCHEMA.read_text())
    registry = Registry().with_resources([(k8s["$id"], Resource.from_contents(k8s)),
                                          (schema["$id"], Resource.from_contents(schema))])
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _kserve_errors(resource: dict) -> list[str]:
    return [f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
            for e in _kserve_validator().iter_errors(resource)]


def _kserve() -> dict[str, dict]:
    return {f.name: d for f in KSERVE for d in _load(f)}


def test_kserve_manifests_validate_against_kserve_schema():
    docs = _kserve()
    assert sorted(d["kind"] for d in docs.values()) == ["InferenceService", "InferenceService", "ServingRuntime"]
    for name, doc in docs.items():
        assert _kserve_errors(doc) == [], name


def test_kserve_schema_catches_mistakes():
    isvc = copy.deepcopy(_kserve()["inferenceservice-amplify.yaml"])
    isvc["spec"]["predictor"]["model"]["storageURI"] = isvc["spec"]["predictor"]["model"].pop("storageUri")
    assert any("storageURI" in e for e in _kserve_errors(isvc))
    runtime = copy.deepcopy(_kserve()["servingruntime-amplify.yaml"])
    runtime["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = [8000]  # a Kubernetes type inside
    assert _kserve_errors(runtime)
    del runtime["spec"]["containers"]
    assert any("containers" in e for e in _kserve_errors(runtime))


def test_kserve_resources_fit_together():
    docs = _kserve()
    runtime = docs["servingruntime-amplify.yaml"]
    amplify = docs["inferenceservice-amplify.yaml"]["spec"]["predictor"]["model"]
    assert amplify["runtime"] == runtime["metadata"]["name"]
    assert amplify["protocolVersion"] == "v2" and "v2" in runtime["spec"]["protocolVersions"]
    assert amplify["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    triton = docs["inferenceservice-triton.yaml"]["spec"]["predictor"]["model"]
    assert triton["runtime"] == "kserve-tritonserver" and triton["modelFormat"]["name"] == "triton"
    assert triton["protocolVersion"] == "v2"
    # Both read the model claim that the base creates.
    claim = _by_kind(_base_resources(), "PersistentVolumeClaim")["metadata"]["name"]
    for model in (amplify, triton):
        assert model["storageUri"].startswith(f"pvc://{claim}/")
    # The runtime reads the model where KServe's storage initializer puts it.
    env = {e["name"]: e.get("value") for e in runtime["spec"]["containers"][0]["env"]}
    assert env["AMPLIFY_MODEL"] == "/mnt/models"


# -- What amplify serve really serves --------------------------------------------------------------

@pytest.fixture(scope="module")
def app_client():
    """The service's app, not started (no lifespan): the model stays 'loading'."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import ServiceSettings

    return TestClient(create_app(ServiceSettings()))


def _containers() -> list[tuple[str, dict]]:
    """(where, container) of every amplify serve container in the rendered overlays and KServe runtime."""
    out = []
    sources = {f"overlay {o}": _render(o) for o in OVERLAYS} if _kustomize() else {"base": tuple(_base_resources())}
    for where, resources in sources.items():
        for c in _by_kind(resources, "Deployment")["spec"]["template"]["spec"]["containers"]:
            out.append((where, c))
    out += [("kserve runtime", c) for c in _kserve()["servingruntime-amplify.yaml"]["spec"]["containers"]]
    return out


def _port(container: dict, port) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == port)


def test_probes_hit_the_service_routes_on_its_port(app_client):
    """Liveness and startup answer 200 while the model still loads (a loading pod is not killed);
    readiness is 503 until the model is loaded and warm; each on the port the service listens on."""
    for where, c in _containers():
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        (container_port,) = [p["containerPort"] for p in c["ports"]]
        assert int(env["AMPLIFY_PORT"]) == container_port, where
        assert env["AMPLIFY_HOST"] == "0.0.0.0", where
        for kind in ("livenessProbe", "startupProbe", "readinessProbe"):
            if kind not in c:
                continue
            get = c[kind]["httpGet"]
            assert _port(c, get["port"]) == container_port, (where, kind)
            status = app_client.get(get["path"]).status_code
            assert status == (503 if kind == "readinessProbe" else 200), (where, kind, get["path"], status)
        assert "readinessProbe" in c and "livenessProbe" in c, where


def test_env_names_are_settings_of_the_service():
    from service.settings import ServiceSettings

    known = {f"AMPLIFY_{name.upper()}" for name in ServiceSettings.model_fields}
    for where, c in _containers():
        names = [e["name"] for e in c.get("env", [])]
        assert len(names) == len(set(names)), (where, names)
        unknown = {n for n in names if n.startswith("AMPLIFY_")} - known
        assert not unknown, (where, unknown)


def test_service_pdb_hpa_and_metrics_point_at_the_deployment(app_client):
    resources = _base_resources()
    deployment = _by_kind(resources, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = _by_kind(resources, "Service")
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = _by_kind(resources, "PodDisruptionBudget")
    assert all(labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items())
    hpa = _by_kind(resources, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    r = app_client.get(annotations["prometheus.io/path"])
    assert r.status_code == 200 and "amplify_requests_in_flight" in r.text


def test_the_gpu_queue_metric_is_one_the_service_exports(app_client):
    hpa = _by_kind(_render("gpu"), "HorizontalPodAutoscaler")
    names = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    metrics = app_client.get("/metrics").text
    for name in names:
        assert re.search(rf"^{name}[ {{]", metrics, flags=re.M), name


def test_gpu_overlay_uses_the_gpu_image_and_one_gpu_per_replica():
    (c,) = _by_kind(_render("gpu"), "Deployment")["spec"]["template"]["spec"]["containers"]
    assert c["image"].endswith(":gpu")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["AMPLIFY_DEVICE"] == "cuda"
    # The image the tag stands for: docker/Dockerfile.gpu, whose default device is cuda as well.
    assert "AMPLIFY_DEVICE=cuda" in (DOCKER / "Dockerfile.gpu").read_text()


def test_pods_run_as_the_images_user():
    """runAsUser is the uid the images create and switch to (USER 10001:10001)."""
    for dockerfile in ("Dockerfile", "Dockerfile.gpu"):
        users = re.findall(r"^USER (\d+)", (DOCKER / dockerfile).read_text(), flags=re.M)
        assert users[-1] == "10001", dockerfile
    pod = _by_kind(_base_resources(), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/models", "/tmp"}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["AMPLIFY_MODEL"].startswith("/models/")


def test_kserve_v2_health_route_exists_when_served(app_client):
    """The runtime speaks v2 (protocolVersions: [v2]): once the v2 routes are in the service, their
    health and infer routes answer (not 404)."""
    if app_client.get("/v2/health/live").status_code == 404:
        pytest.skip("this checkout's service has no /v2 routes yet (KServe v2 protocol, issue 16)")
    assert app_client.get("/v2/health/live").status_code == 200
    assert app_client.get("/v2/health/ready").status_code in (200, 503)
