"""Per-call overhead of the three protocols at batch 1, side by side in one run: this project's HTTP
contract (msgpack), openpi's WebSocket policy protocol, and KServe v2 with binary tensors.

    python -m benchmarks.protocols                      # random small bundle, 40 calls per protocol
    python -m benchmarks.protocols --bundle DIR --repeats 100

One ``amplify serve`` subprocess (``--threads 1``); one client per protocol (this project's wire code
for each: ``clients.codec``, ``clients.openpi``, ``clients.v2``), calls interleaved round-robin so
the three see the same machine. For every call: the round trip (client encode -> reply decoded) and
the server's model time for that call (``Server-Timing: model`` / ``server_timing.model_ms``); the
overhead is their difference. Server CPU per request is the server process's user+system CPU
(``/proc/<pid>/stat``) across the call, and the same without the batcher worker thread that runs
the model (``/proc/<pid>/task/<tid>``: the thread that gains the most CPU over a few ``act`` calls;
one torch thread). Writes ``benchmarks/results/<time>-protocols.{json,md}``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np

from benchmarks.common import machine_info, summarize
from benchmarks.server import REPO, Server, thread_policy, server_env
from benchmarks.serving import request_fields

TICK = os.sysconf("SC_CLK_TCK")
_MODEL = re.compile(r"model;dur=([0-9.]+)")


def _stat_cpu(path: str) -> float:
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of every thread of process ``pid``."""
    out = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            out[task] = _stat_cpu(f"/proc/{pid}/task/{task}/stat")
        except OSError:
            pass
    return out


def model_thread(pid: int, call: Callable[[], float], calls: int = 3) -> str:
    """The thread that runs the model: the one that gains the most CPU over a few ``act`` calls (the
    batcher's one worker thread runs every model call; one torch thread)."""
    before = thread_cpu(pid)
    for _ in range(calls):
        call()
    after = thread_cpu(pid)
    return max(after, key=lambda t: after[t] - before.get(t, 0.0))


def cpu_seconds(pid: int, model_tid: str) -> tuple[float, float]:
    """(all threads, the model's thread) user + system CPU seconds of process ``pid`` so far."""
    return _stat_cpu(f"/proc/{pid}/stat"), _stat_cpu(f"/proc/{pid}/task/{model_tid}/stat")


Call = Callable[[], float]  # one round trip -> the server's model seconds for it


def http_msgpack(client: httpx.Client, path: str, fields: dict[str, np.ndarray], out: str) -> Call:
    from clients.codec import MSGPACK, decode_body, encode_body

    headers = {"content-type": MSGPACK, "accept": MSGPACK}

    def call() -> float:
        r = client.post(path, content=encode_body(fields, MSGPACK), headers=headers)
        r.raise_for_status()
        assert out in decode_body(r.content, r.headers["content-type"])
        return float(_MODEL.search(r.headers["server-timing"]).group(1)) / 1000
    return call


def v2_binary(client: httpx.Client, model: str, inputs: dict[str, np.ndarray], out: str) -> Call:
    from clients.v2 import HEADER, build_request, parse_response

    def call() -> float:
        body, headers = build_request(inputs, [out], binary=True)
        r = client.post(f"/v2/models/{model}/infer", content=body, headers=headers)
        r.raise_for_status()
        assert out in parse_response(r.content, r.headers.get(HEADER))
        return float(_MODEL.search(r.headers["server-timing"]).group(1)) / 1000
    return call


def openpi_ws(url: str, observation: dict[str, Any]):
    from websockets.sync.client import connect

    from clients.openpi import pack, unpack

    ws = connect(url.replace("http://", "ws://") + "/", max_size=None, compression=None).__enter__()
    ws.recv()  # the metadata frame

    def call() -> float:
        ws.send(pack(observation))
        reply = unpack(ws.recv())
        assert "actions" in reply
        return reply["server_timing"]["model_ms"] / 1000
    return call, ws


def measure(calls: dict[str, Call], pid: int, model_tid: str, repeats: int) -> dict[str, Any]:
    """Interleaved round robin (the order rotates each round); per protocol: round trip, model, overhead, CPU."""
    names = list(calls)
    for name in names:  # warm each path
        calls[name]()
    rec: dict[str, dict[str, list[float]]] = {n: {"rtt": [], "model": [], "cpu": [], "cpu_model": []} for n in names}
    for i in range(repeats):
        for name in names[i % len(names):] + names[:i % len(names)]:
            (c0, m0), t0 = cpu_seconds(pid, model_tid), time.perf_counter()
            model = calls[name]()
            t1, (c1, m1) = time.perf_counter(), cpu_seconds(pid, model_tid)
            rec[name]["rtt"].append(t1 - t0)
            rec[name]["model"].append(model)
            rec[name]["cpu"].append(c1 - c0)
            rec[name]["cpu_model"].append(m1 - m0)
    out = {}
    for name, r in rec.items():
        rtt, model, cpu, cpu_model = map(np.asarray, (r["rtt"], r["model"], r["cpu"], r["cpu_model"]))
        out[name] = {"round_trip": summarize(list(rtt)), "model": summarize(list(model)),
                     "overhead": summarize(list(rtt - model)),
                     "server_cpu_per_request_s": float(cpu.mean()),
                     "server_cpu_outside_model_per_request_s": float((cpu - cpu_model).mean())}
    return out


def render(result: dict[str, Any]) -> str:
    lines = [f"# Protocol overhead at batch 1 ({result['time']})", "",
             f"Command: `{result['command']}`", "",
             f"Bundle: {result['bundle']}; server `amplify serve --threads 1` ({result['thread_policy']}); "
             f"{result['repeats']} calls per protocol, interleaved; machine: {result['machine']['cpu']}, "
             f"{result['machine']['cores']} cores, load average {result['machine'].get('load_average')}", "",
             "| endpoint | protocol | round trip median ms | model median ms | overhead median ms | overhead p95 ms | "
             "server CPU ms / request | server CPU outside the model thread ms / request |",
             "|---|---|---|---|---|---|---|---|"]
    for endpoint, rows in result["endpoints"].items():
        for name, r in rows.items():
            lines.append(f"| {endpoint} | {name} | {r['round_trip']['median_s'] * 1e3:.2f} | {r['model']['median_s'] * 1e3:.2f} "
                         f"| {r['overhead']['median_s'] * 1e3:.2f} | {r['overhead']['p95_s'] * 1e3:.2f} "
                         f"| {r['server_cpu_per_request_s'] * 1e3:.2f} | {r['server_cpu_outside_model_per_request_s'] * 1e3:.2f} |")
    lines += ["", "Overhead = round trip (client encode, send, server, reply decoded) - the server's model time for "
              "that call. openpi's protocol carries act only. Server CPU: the server process's user+system time "
              "across each call (/proc, 10 ms ticks: means over many calls); outside the model thread = minus the "
              "batcher worker's (which runs the model with one torch thread): parsing, validation, encoding, "
              "the event loop."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", help="bundle directory (default: a cached random bundle of --preset)")
    p.add_argument("--preset", default="small")
    p.add_argument("--repeats", type=int, default=40, help="calls per protocol and endpoint")
    p.add_argument("--cache", default=str(REPO / "benchmarks" / ".cache"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    a = p.parse_args(argv)
    bundle = Path(a.bundle) if a.bundle else Path(a.cache) / f"random-{a.preset}"
    if not (bundle / "config.json").exists() and not bundle.is_file():
        import subprocess
        subprocess.run([sys.executable, "-m", "amplify", "init", "--preset", a.preset, "--out", str(bundle)], check=True,
                       cwd=REPO)
    result: dict[str, Any] = {"time": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                              "command": "python -m benchmarks.protocols " + " ".join(argv if argv is not None else sys.argv[1:]),
                              "bundle": str(bundle) if a.bundle else f"random {a.preset} (amplify init)",
                              "repeats": a.repeats, "machine": machine_info(), "thread_policy": thread_policy(server_env()),
                              "endpoints": {}}
    with Server("--model", str(bundle), "--threads", "1", "--log-format", "text", "log_level=warning") as server, \
            httpx.Client(base_url=server.url, timeout=600) as client:
        pid = server.proc.pid
        meta = server.meta
        act = request_fields(meta, "act")
        obs = {f"observation/{v}": act["images"][0, i] for i, v in enumerate(meta["views"])}
        obs.update({"observation/state": act["proprio"][0], "text_emb": act["text_emb"][0]})
        ws_call, ws = openpi_ws(server.url, obs)
        http_act = http_msgpack(client, "/act", act, "actions")
        tid = model_thread(pid, http_act)
        try:
            result["endpoints"]["act"] = measure({
                "HTTP msgpack (/act)": http_act,
                "openpi WebSocket (/)": ws_call,
                "KServe v2 binary (amplify_act)": v2_binary(client, "amplify_act", act, "actions"),
            }, pid, tid, a.repeats)
        finally:
            ws.close()
        enc = request_fields(meta, "encode")
        result["endpoints"]["encode"] = measure({
            "HTTP msgpack (/encode)": http_msgpack(client, "/encode", enc, "indices"),
            "KServe v2 binary (amplify_encode)": v2_binary(client, "amplify_encode",
                                                           {"velocities": np.diff(enc["tracks"], axis=2)}, "indices"),
        }, pid, tid, a.repeats)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M") + "-protocols"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = render(result)
    (out / f"{stem}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
