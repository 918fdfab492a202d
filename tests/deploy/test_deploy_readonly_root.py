"""The Kubernetes Deployment runs ``amplify serve`` with ``readOnlyRootFilesystem: true`` and only
its emptyDir volumes writable. Here the same process runs in a private mount namespace whose root
is remounted read-only, with a tmpfs at each emptyDir mount path of the manifest and the manifest's
AMPLIFY_* settings, and serves /ready, /act and /docs. (Linux, as root, with ``unshare``; skipped
otherwise. The remount is a bind remount inside the namespace: the host's filesystem is untouched.)"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest
import yaml

from deploy_helpers import REPO

pytestmark = pytest.mark.slow

DEPLOYMENT = REPO / "deploy" / "kubernetes" / "base" / "deployment.yaml"

CLIENT = textwrap.dedent("""
    import json, sys, time
    import httpx, numpy as np
    url = sys.argv[1]
    deadline = time.time() + 240
    while True:
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            sys.exit("not ready in time")
        time.sleep(0.2)
    m = httpx.get(url + "/metadata").json()
    h, w = m["image_size"]
    body = {"images": np.zeros((1, len(m["views"]), h, w, 3), np.uint8).tolist(),
            "proprio": np.zeros((1, m["proprio_dim"])).tolist(),
            "text_emb": np.zeros((1, m["text_embedding_dim"])).tolist()}
    act = httpx.post(url + "/act", json=body, timeout=120)
    print(json.dumps({"act": act.status_code, "shape": np.asarray(act.json().get("actions", [])).shape,
                      "docs": httpx.get(url + "/docs").status_code}))
""")


def test_serves_with_a_read_only_root_and_the_manifests_writable_paths(local_stack):
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs Linux, root and unshare (a private mount namespace)")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode().strip()}")
    pod = next(d for d in yaml.safe_load_all(DEPLOYMENT.read_text()) if d)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    writable = [m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty_dirs]
    assert writable == ["/tmp"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    hidden = [str(p) for p in (REPO, sys.prefix) if any(os.path.realpath(p).startswith(w.rstrip("/") + "/")
                                                          for w in writable)]
    if hidden:
        pytest.skip(f"{', '.join(hidden)} lie under {writable}, which the test covers with a tmpfs as the pod's emptyDir: "
                    "run it from a checkout and venv outside those paths")

    # The model outside /tmp (which the namespace covers with a tmpfs): /var/tmp, removed afterwards.
    work = tempfile.mkdtemp(prefix="amplify-ro-", dir="/var/tmp")
    try:
        model = os.path.join(work, "default")
        subprocess.run([sys.executable, "-m", "amplify", "init", "--preset", "small", "--out", model],
                       cwd=REPO, check=True, capture_output=True, timeout=300)
        port = local_stack.free_port()
        env.update({"AMPLIFY_MODEL": model, "AMPLIFY_HOST": "127.0.0.1", "AMPLIFY_PORT": str(port),
                    "AMPLIFY_THREADS": "1", "AMPLIFY_LOG_LEVEL": "warning", "HOME": "/home/amplify-absent",
                    "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", "GOMP_SPINCOUNT": "10000",
                    "OMP_NUM_THREADS": "1", "PATH": os.environ["PATH"]})
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        mounts = "\n".join(f"mount -t tmpfs -o size=256m tmpfs {shlex.quote(p)}" for p in writable)
        script = textwrap.dedent(f"""
            set -e
            mount --make-rprivate /
            mount -o remount,bind,ro /
            {mounts}
            if touch {shlex.quote(work)}/written 2>/dev/null; then echo "root is writable" >&2; exit 3; fi
            cd /
            export {exports}
            {shlex.quote(sys.executable)} -m amplify serve > /tmp/serve.log 2>&1 &
            pid=$!
            status=0
            {shlex.quote(sys.executable)} -c {shlex.quote(CLIENT)} http://127.0.0.1:{port} || status=$?
            kill -TERM $pid; wait $pid || true
            [ $status = 0 ] || cat /tmp/serve.log >&2
            exit $status
        """)
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c", script],
                           capture_output=True, text=True, timeout=400)
        assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-4000:])
        result = json.loads(r.stdout.strip().splitlines()[-1])
        assert result["act"] == 200 and result["docs"] == 200, result
        assert len(result["shape"]) == 3 and result["shape"][0] == 1, result
    finally:
        shutil.rmtree(work, ignore_errors=True)
