"""A robot written against the unmodified openpi-client (run with its own venv's python by
test_openpi.py): handshake, observations, a bad observation, a wrong API key, 8 robots at once.

    python openpi_robot.py HOST PORT API_KEY IN.npz OUT_DIR

IN.npz holds ``images`` (N, v, H, W, 3) uint8, ``state`` (N, P), ``views`` and ``prompts`` (N,).
Writes OUT_DIR/result.json and OUT_DIR/actions.npz. Imports only openpi-client and numpy.
"""
import json
import sys
import threading

import numpy as np
from openpi_client.websocket_client_policy import WebsocketClientPolicy


def observation(data, i):
    obs = {f"observation/{v}": data["images"][i, j] for j, v in enumerate(data["views"])}
    obs["observation/state"] = data["state"][i]
    obs["prompt"] = str(data["prompts"][i])
    return obs


def main():
    host, port, key, inp, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    data = dict(np.load(inp))
    n = len(data["images"])
    result = {}
    policy = WebsocketClientPolicy(host, port, api_key=key)
    meta = policy.get_server_metadata()
    result["metadata"] = {k: meta[k] for k in ("views", "action_horizon", "action_dim", "proprio_dim", "protocol",
                                                "observation_keys", "instructions")}
    actions = []
    for i in range(n):
        reply = policy.infer(observation(data, i))
        actions.append(reply["actions"])
        result["server_timing"] = reply["server_timing"]
        result["actions_type"] = [type(reply["actions"]).__name__, str(reply["actions"].dtype)]
    # a bad observation: an error, and the same connection keeps serving
    bad = observation(data, 0)
    bad["observation/state"] = data["state"][0][:4]
    try:
        policy.infer(bad)
        result["bad"] = None
    except RuntimeError as e:
        result["bad"] = str(e)
    after = policy.infer(observation(data, 0))["actions"]
    # a wrong API key: refused in the handshake
    try:
        WebsocketClientPolicy(host, port, api_key="wrong-key")
        result["wrong_key"] = None
    except Exception as e:  # websockets' InvalidStatus (HTTP 401)
        result["wrong_key"] = f"{type(e).__name__}: {e}"
    try:
        WebsocketClientPolicy(host, port)
        result["no_key"] = None
    except Exception as e:
        result["no_key"] = f"{type(e).__name__}: {e}"
    # 8 robots, each on its own connection, 2 observations each, all at once
    robots = [None] * 8
    errors = []
    start = threading.Barrier(8)

    def robot(r):
        try:
            p = WebsocketClientPolicy(host, port, api_key=key)
            start.wait()
            robots[r] = [p.infer(observation(data, (r + k) % n))["actions"] for k in range(2)]
        except Exception as e:  # reported, not raised: the test says what failed
            errors.append(f"robot {r}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=robot, args=(r,)) for r in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    result["robot_errors"] = errors
    np.savez(f"{out}/actions.npz", actions=np.stack(actions), after=after,
             robots=np.stack([np.stack(r) for r in robots]) if not errors else np.zeros(0))
    with open(f"{out}/result.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
