"""Per-call overhead of the three protocols at batch 1, side by side in one run: this project's HTTP
contract (msgpack), openpi's WebSocket policy protocol, and KServe v2 with binary tensors.

    python -m benchmarks.protocols                      # random small bundle, 40 calls per protocol
    python -m benchmarks.protocols --bundle DIR --repeats 100

One ``amplify serve`` subprocess (``--threads 1``); one client per protocol (this project's wire code
for each: ``clients.codec``, ``clients.openpi``, ``clients.v2``), calls interleaved round-robin so
the three see the same machine. For every call: the round trip (client encode -> reply decoded) and
the server's model time for that call (``Server-Timing: model`` / ``server_timing.model_ms``); the
overhead is their difference. Two parts of it the server reports too (``Server-Timing: queue, resume``
/ ``server_timing``): the hop to the batcher's worker thread (``queue``) and back to the event loop
(``resume``), each a thread wake-up. Server CPU per request is the server process's user+system CPU
(``/proc/<pid>/stat``) across the call, and the same without the batcher worker thread that runs
the model (``/proc/<pid>/task/<tid>``: the thread that gains the most CPU over a few ``act`` calls;
one torch thread). Beside them, the cost of one thread wake-up on this machine, in-process
(:func:`wakeup_probe`): a request through a :class:`service.batching.Batcher` whose model does nothing
(both threads stay awake) against one whose model sleeps as long as the served model takes (the event
loop's thread idles meanwhile, as it does while a robot's model call runs), and the WebSocket's
transport floor (:func:`transport_floor`): the same client and frames against uvicorn with ``amplify
serve``'s protocol settings and an app that answers every frame with a fixed reply (no model, no checks),
at once and after sleeping the served model's time, and the same for HTTP with ``/act``'s msgpack body.
Writes ``benchmarks/results/<time>-protocols.{json,md}``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np

from benchmarks.common import machine_info, summarize, utc_stamp, write_results
from benchmarks.server import REPO, Server, free_port, thread_policy, server_env
from benchmarks.serving import request_fields

TICK = os.sysconf("SC_CLK_TCK")
_TIMING = re.compile(r"(model|queue|resume);dur=([0-9.]+)")


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


Call = Callable[[], dict[str, float]]  # one round trip -> the server's {model, queue, resume} seconds for it


def _header_timing(r: httpx.Response) -> dict[str, float]:
    return {k: float(v) / 1000 for k, v in _TIMING.findall(r.headers["server-timing"])}


def http_msgpack(client: httpx.Client, path: str, fields: dict[str, np.ndarray], out: str) -> Call:
    from clients.codec import MSGPACK, decode_body, encode_body

    headers = {"content-type": MSGPACK, "accept": MSGPACK}

    def call() -> dict[str, float]:
        r = client.post(path, content=encode_body(fields, MSGPACK), headers=headers)
        r.raise_for_status()
        assert out in decode_body(r.content, r.headers["content-type"])
        return _header_timing(r)
    return call


def v2_binary(client: httpx.Client, model: str, inputs: dict[str, np.ndarray], out: str) -> Call:
    from clients.v2 import HEADER, build_request, parse_response

    def call() -> dict[str, float]:
        body, headers = build_request(inputs, [out], binary=True)
        r = client.post(f"/v2/models/{model}/infer", content=body, headers=headers)
        r.raise_for_status()
        assert out in parse_response(r.content, r.headers.get(HEADER))
        return _header_timing(r)
    return call


def openpi_ws(url: str, observation: dict[str, Any]):
    from websockets.sync.client import connect

    from clients.openpi import pack, unpack

    ws = connect(url.replace("http://", "ws://") + "/", max_size=None, compression=None).__enter__()
    ws.recv()  # the metadata frame

    def call() -> dict[str, float]:
        ws.send(pack(observation))
        reply = unpack(ws.recv())
        assert "actions" in reply
        return {k: reply["server_timing"].get(f"{k}_ms", 0.0) / 1000 for k in ("model", "queue", "resume")}
    return call, ws


def measure(calls: dict[str, Call], pid: int, model_tid: str, repeats: int) -> dict[str, Any]:
    """Interleaved round robin (the order rotates each round); per protocol: round trip, model, overhead, CPU."""
    names = list(calls)
    for name in names:  # warm each path
        calls[name]()
    rec: dict[str, dict[str, list[float]]] = {n: {"rtt": [], "model": [], "queue": [], "resume": [], "cpu": [],
                                                  "cpu_model": []} for n in names}
    for i in range(repeats):
        for name in names[i % len(names):] + names[:i % len(names)]:
            (c0, m0), t0 = cpu_seconds(pid, model_tid), time.perf_counter()
            server = calls[name]()
            t1, (c1, m1) = time.perf_counter(), cpu_seconds(pid, model_tid)
            rec[name]["rtt"].append(t1 - t0)
            for part in ("model", "queue", "resume"):
                rec[name][part].append(server.get(part, 0.0))
            rec[name]["cpu"].append(c1 - c0)
            rec[name]["cpu_model"].append(m1 - m0)
    out = {}
    for name, r in rec.items():
        rtt, model, cpu, cpu_model = map(np.asarray, (r["rtt"], r["model"], r["cpu"], r["cpu_model"]))
        out[name] = {"round_trip": summarize(list(rtt)), "model": summarize(list(model)),
                     "overhead": summarize(list(rtt - model)),
                     "queue": summarize(r["queue"]), "resume": summarize(r["resume"]),
                     "server_cpu_per_request_s": float(cpu.mean()),
                     "server_cpu_outside_model_per_request_s": float((cpu - cpu_model).mean())}
    return out


async def echo_app(scope: dict[str, Any], receive: Callable, send: Callable) -> None:
    """ASGI app for :func:`transport_floor`: accepts a WebSocket and answers every frame with one fixed
    reply the size of a batch-1 ``act`` reply, and answers an HTTP POST (its whole body read) with one
    fixed msgpack reply the size of ``/act``'s; each after ``time.sleep(delay)`` when the URL has
    ``?delay=SECONDS`` (blocking on purpose: the loop's timers have millisecond granularity); nothing
    else (lifespan acknowledged)."""
    from urllib.parse import parse_qs

    from clients.codec import MSGPACK, encode_body
    from clients.openpi import pack

    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    delay = float(parse_qs(scope.get("query_string", b"").decode()).get("delay", ["0"])[0])
    if scope["type"] == "http":
        while (await receive()).get("more_body", False):
            pass
        if delay > 0:
            time.sleep(delay)
        body = encode_body({"actions": np.zeros((1, 16, 7), np.float32)}, MSGPACK)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", MSGPACK.encode()), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    reply = pack({"actions": np.zeros((16, 7), np.float32), "server_timing": {"model_ms": 0.0}})
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while (await receive())["type"] == "websocket.receive":
        if delay > 0:
            time.sleep(delay)
        await send({"type": "websocket.send", "bytes": reply})


def transport_floor(observation: dict[str, Any], model_s: float, calls: int = 60,
                    act_fields: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Round trips of the openpi client's frames to :func:`echo_app` on uvicorn with ``amplify serve``'s
    protocol settings (h11, websockets-sansio, uvloop where installed), in a subprocess: what the WebSocket
    costs before any of the service's own code runs. ``busy``: answered at once; ``idle``: answered after
    sleeping ``model_s`` (both sides idle as during a model call), round trip minus the sleep; and how
    late ``time.sleep(model_s)`` itself wakes on this machine (``sleep_overshoot``, part of ``idle``).
    With ``act_fields`` also ``http``: the same for HTTP, the client encoding ``/act``'s msgpack body and
    decoding the reply on every call as :func:`http_msgpack` does, over one keep-alive connection."""
    import socket
    import subprocess

    from websockets.sync.client import connect

    from clients.openpi import pack, unpack

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "benchmarks.protocols:echo_app", "--host", "127.0.0.1",
                             "--port", str(port), "--http", "h11", "--ws", "websockets-sansio", "--log-level", "warning"],
                            cwd=REPO, env=server_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"the echo server did not start: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
                time.sleep(0.1)
        frame = pack(observation)
        out: dict[str, Any] = {"frame_bytes": len(frame), "model_s": model_s}
        for name, delay in (("busy", 0.0), ("idle", model_s)):
            rtt = []
            with connect(f"ws://127.0.0.1:{port}/?delay={delay:.6f}", max_size=None, compression=None) as ws:
                for i in range(calls + 5):
                    t0 = time.perf_counter()
                    ws.send(frame)
                    unpack(ws.recv())
                    if i >= 5:
                        rtt.append(time.perf_counter() - t0 - delay)
            out[name] = summarize(rtt)
        if act_fields is not None:
            from clients.codec import MSGPACK, decode_body, encode_body

            headers = {"content-type": MSGPACK, "accept": MSGPACK}
            out["http"] = {"body_bytes": len(encode_body(act_fields, MSGPACK))}
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                for name, delay in (("busy", 0.0), ("idle", model_s)):
                    rtt = []
                    for i in range(calls + 5):
                        t0 = time.perf_counter()
                        r = client.post(f"/act?delay={delay:.6f}", content=encode_body(act_fields, MSGPACK),
                                        headers=headers)
                        r.raise_for_status()
                        assert "actions" in decode_body(r.content, r.headers["content-type"])
                        if i >= 5:
                            rtt.append(time.perf_counter() - t0 - delay)
                    out["http"][name] = summarize(rtt)
        late = []
        for _ in range(min(calls, 20)):
            t0 = time.perf_counter()
            time.sleep(model_s)
            late.append(time.perf_counter() - t0 - model_s)
        out["sleep_overshoot"] = summarize(late)
    finally:
        proc.terminate()
        proc.wait(30)
    return out


def wakeup_probe(model_s: float, calls: int = 60) -> dict[str, Any]:
    """One request at a time through a :class:`service.batching.Batcher` on an event loop (uvloop where
    installed, as ``amplify serve`` runs), whose model does nothing (``busy``: the event loop's thread
    and the worker stay awake) or sleeps ``model_s`` (``idle``: the event loop's thread sleeps while the
    model runs, as in serving). Per request: ``queue`` (submitted -> the worker starts it) and
    ``resume`` (outputs ready -> the coroutine runs again), each one thread wake-up."""
    import asyncio

    from service.batching import Batcher

    try:
        import uvloop
        run = uvloop.run
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        run = asyncio.run
    inputs = {"x": np.zeros((1, 8), np.float32)}

    async def requests(sleep_s: float) -> dict[str, Any]:
        batcher = Batcher(max_batch_size=1)
        batcher.start()

        def model(x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            if sleep_s:
                time.sleep(sleep_s)
            return x
        queue, resume = [], []
        try:
            for i in range(calls + 5):
                _, timing = await batcher.submit("probe", "probe", model, inputs, 1)
                if i >= 5:  # warm-up
                    queue.append(timing.queue_s)
                    resume.append(timing.resume_s)
        finally:
            batcher.stop()
        return {"queue": summarize(queue), "resume": summarize(resume)}
    return {"model_s": model_s, "busy": run(requests(0.0)), "idle": run(requests(model_s))}


def _median_p95(summary: dict[str, float]) -> str:
    """``**median** (p95)`` in ms, for the floors' sentences."""
    return f"**{summary['median_s'] * 1e3:.3f}** ({summary['p95_s'] * 1e3:.3f})"


def render(result: dict[str, Any]) -> str:
    lines = [f"# Protocol overhead at batch 1 ({result['time']})", "",
             f"Command: `{result['command']}`", "",
             f"Bundle: {result['bundle']}; server `amplify serve --threads 1` ({result['thread_policy']}); "
             f"{result['repeats']} calls per protocol, interleaved; machine: {result['machine']['cpu']}, "
             f"{result['machine']['cores']} cores, load average {result['machine'].get('load_average')}", "",
             "| endpoint | protocol | round trip median ms | model median ms | overhead median ms | overhead p95 ms | "
             "of which hop to the worker (queue) ms | hop back (resume) ms | "
             "server CPU ms / request | server CPU outside the model thread ms / request |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for endpoint, rows in result["endpoints"].items():
        for name, r in rows.items():
            lines.append(f"| {endpoint} | {name} | {r['round_trip']['median_s'] * 1e3:.2f} | {r['model']['median_s'] * 1e3:.2f} "
                         f"| {r['overhead']['median_s'] * 1e3:.2f} | {r['overhead']['p95_s'] * 1e3:.2f} "
                         f"| {r['queue']['median_s'] * 1e3:.3f} | {r['resume']['median_s'] * 1e3:.3f} "
                         f"| {r['server_cpu_per_request_s'] * 1e3:.2f} | {r['server_cpu_outside_model_per_request_s'] * 1e3:.2f} |")
    lines += ["", "Overhead = round trip (client encode, send, server, reply decoded) - the server's model time for "
              "that call. openpi's protocol carries act only. Server CPU: the server process's user+system time "
              "across each call (/proc, 10 ms ticks: means over many calls); outside the model thread = minus the "
              "batcher worker's (which runs the model with one torch thread): parsing, validation, encoding, "
              "the event loop. Queue and resume: the server's own timestamps (Server-Timing / server_timing)."]
    floor = result.get("transport_floor")
    if floor:
        lines += ["", f"WebSocket transport floor (`benchmarks.protocols.transport_floor`): the same client sends the same "
                  f"{floor['frame_bytes']:,}-byte observation frames to uvicorn with `amplify serve`'s protocol settings "
                  f"and an app that answers each with a fixed reply. Round trip median (p95), ms: answered at once "
                  f"{_median_p95(floor['busy'])}; answered after sleeping the model's {floor['model_s'] * 1e3:.1f} ms, "
                  f"minus the sleep, {_median_p95(floor['idle'])}, of which "
                  f"`time.sleep` itself wakes {floor['sleep_overshoot']['median_s'] * 1e3:.3f} ms late (median, measured "
                  f"in the benchmark's process)."]
        http = floor.get("http")
        if http:
            lines += ["", f"HTTP transport floor: the same client code as `/act` (msgpack body of {http['body_bytes']:,} "
                      f"bytes encoded, the reply decoded, one keep-alive connection) against the same uvicorn (h11) and "
                      f"an app that reads the body and answers with a fixed `/act`-sized reply. Round trip median (p95), "
                      f"ms: answered at once {_median_p95(http['busy'])}; after the model's {floor['model_s'] * 1e3:.1f} ms, "
                      f"minus the sleep, {_median_p95(http['idle'])}."]
    probe = result.get("wakeup_probe")
    if probe:
        lines += ["", f"Thread wake-ups on this machine (in-process `Batcher`, one request at a time, "
                  f"{probe['busy']['queue']['n']} requests each; `benchmarks.protocols.wakeup_probe`):", "",
                  "| model | hop to the worker (queue) median ms | hop back (resume) median ms | p95 ms (queue / resume) |",
                  "|---|---|---|---|"]
        for label, key in (("does nothing (threads stay awake)", "busy"),
                           (f"sleeps {probe['model_s'] * 1e3:.1f} ms, the served act's model time (the event loop idles)",
                            "idle")):
            q, r = probe[key]["queue"], probe[key]["resume"]
            lines.append(f"| {label} | {q['median_s'] * 1e3:.3f} | {r['median_s'] * 1e3:.3f} "
                         f"| {q['p95_s'] * 1e3:.3f} / {r['p95_s'] * 1e3:.3f} |")
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
    model_s = result["endpoints"]["act"]["openpi WebSocket (/)"]["model"]["median_s"]
    result["transport_floor"] = transport_floor(obs, model_s, calls=max(a.repeats, 5), act_fields=act)
    result["wakeup_probe"] = wakeup_probe(model_s, calls=max(a.repeats, 5))
    write_results(a.out, utc_stamp() + "-protocols", result, render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
