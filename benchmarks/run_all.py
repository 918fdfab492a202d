"""Run every benchmark and write a markdown table and JSON.

    python -m benchmarks.run_all                 # paper configuration, all sections (~10 min on 2 cores)
    python -m benchmarks.run_all --quick         # small preset, few repeats (smoke test, < 1 min)
    python -m benchmarks.run_all --bundle DIR --onnx EXPORT --torchscript EXPORT --sections inprocess

Sections: 1 ``inprocess`` (act at batch 1/4/16: reference vs cached PyTorch vs TorchScript vs ONNX
Runtime float32/int8; each stage; FLOPs, matmul rate, bandwidth -> lower bounds), 2 ``overhead``
(HTTP msgpack/JSON vs in-process at batch 1, bytes), 3 ``concurrency`` (1/4/16/64 clients on /act
and /encode, batching off and on; closed-loop steady state: a window that opens once every client has
completed one request, ``--duration``/``--act-duration`` long and holding at least ``--min-requests``).
Without ``--bundle`` a random bundle of ``--preset`` is written once with ``amplify init`` into
``--cache``, and exported there.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from amplify import AMPLIFY
from benchmarks import inprocess
from benchmarks.common import fmt_ms, machine_info, ratio


def render_inprocess(r: dict) -> list[str]:
    lines = ["## 1. In-process `act` and stages (bundle of this run)", ""]
    f = r["flops"]
    lines += [
        f"- FLOPs of one `act` (batch 1): cached {f['act_cached'] / 1e9:.1f} GFLOP, "
        f"reference (FD recomputing) {f['act_reference'] / 1e9:.1f} GFLOP",
        f"- Sustained float32 matmul rate: {f['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s -> lower bound for one "
        f"`act`: {fmt_ms(f['act_lower_bound_s'])} ms",
        f"- Cached and reference FD give identical indices: {r['indices_identical']}",
        "",
        f"- Copy bandwidth {f['copy_bytes_per_s'] / 1e9:.1f} GB/s; FD weights {f['fd_weight_bytes'] / 1e6:.0f} MB read "
        f"{f['fd_steps']} times per prediction -> FD bandwidth bound {fmt_ms(f['fd_bandwidth_bound_s'])} ms at any batch",
        "",
        "| batch | back end | median ms | p95 ms | speed-up vs reference | x FLOP lower bound (b=1) | max abs diff vs torch |",
        "|---|---|---|---|---|---|---|",
    ]
    for b, row in r["act"].items():
        ref = row.get("reference_torch", {}).get("median_s")
        for name, t in row.items():
            sp = f"{ratio(ref, t['median_s']):.1f}x" if ref else "-"
            lb = f"{t['median_s'] / f['act_lower_bound_s']:.2f}" if int(b) == 1 else "-"
            diff = f"{t['max_abs_diff_vs_torch']:.2g}" if "max_abs_diff_vs_torch" in t else "-"
            lines.append(f"| {b} | {name} | {fmt_ms(t['median_s'])} | {fmt_ms(t['p95_s'])} | {sp} | {lb} | {diff} |")
    if "floor" in r:
        fl, b1 = r.get("floor_same_turns", r["floor"]), r["act"].get(1) or r["act"].get("1") or {}
        prep = b1.get("cached_torch_prepared", {}).get("median_s")
        lines += ["",
                  f"- Floors of one batch-1 `act`: bandwidth floor {fmt_ms(fl['bandwidth_floor_s'])} ms (FD weights read "
                  f"{f['fd_steps']} times, {fmt_ms(fl['fd_weight_read_s'])} ms each, + vision and ID FLOPs "
                  f"{fmt_ms(fl['vision_id_flop_s'])} ms); roofline floor {fmt_ms(fl['roofline_floor_s'])} ms (the "
                  f"{fl['fd_prefix_flops'] / 1e9:.1f} GFLOP FD prefix at the matmul rate instead of one weight read); "
                  f"from a matmul rate of {fl['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s and copy bandwidth "
                  f"{fl['copy_bytes_per_s'] / 1e9:.1f} GB/s measured in the same turns as the batch-1 `act` timings"]
        if prep:
            lines.append(f"- Prepared PyTorch (the default back end) at batch 1: {fmt_ms(prep)} ms = "
                         f"**{prep / fl['bandwidth_floor_s']:.2f}x** the bandwidth floor, "
                         f"{prep / fl['roofline_floor_s']:.2f}x the roofline floor")
    bf = [(b, precision, row["cached_torch_prepared"], row[key]) for b, row in r["act"].items()
          for precision, key in inprocess.LOW_PRECISION_ROWS
          if key in row]
    if bf:
        lines += ["", "| batch | precision | fp32 prepared ms | prepared ms | requests/s over fp32 | FD token agreement "
                  "with fp32 | largest action difference |", "|---|---|---|---|---|---|---|"]
        for b, precision, t32, t16 in bf:
            lines.append(f"| {b} | {precision} | {fmt_ms(t32['median_s'])} | {fmt_ms(t16['median_s'])} | "
                         f"**{ratio(t32['median_s'], t16['median_s']):.2f}x** | "
                         f"{t16['token_agreement_vs_fp32'] * 100:.1f} % | {t16['max_abs_diff_vs_fp32']:.3g} |")
    lines += ["", "| stage | median ms |", "|---|---|"]
    for name, t in r["stages"].items():
        lines.append(f"| {name} | {t if isinstance(t, bool) else fmt_ms(t['median_s'])} |")
    st = r["stages"]
    lines += [
        "",
        f"- FD prediction, cached vs reference: {ratio(st['fd_predict_reference']['median_s'], st['fd_predict_cached']['median_s']):.1f}x"
        f" (prepared linear layers: {ratio(st['fd_predict_reference']['median_s'], st['fd_predict_cached_prepared']['median_s']):.1f}x)",
        f"- MT decode vs the original form, batch 1: separable with logits "
        f"{ratio(st['mt_decode_reference_b1']['median_s'], st['mt_decode_fast_logits_b1']['median_s']):.1f}x, "
        f"chunked velocities only {ratio(st['mt_decode_reference_b1']['median_s'], st['mt_decode_velocities_b1']['median_s']):.1f}x; "
        f"batch 8: {ratio(st['mt_decode_reference_b8']['median_s'], st['mt_decode_fast_logits_b8']['median_s']):.1f}x, "
        f"{ratio(st['mt_decode_reference_b8']['median_s'], st['mt_decode_velocities_b8']['median_s']):.1f}x; "
        f"chunked velocities with prepared linear layers: batch 1 "
        f"{ratio(st['mt_decode_reference_b1']['median_s'], st['mt_decode_velocities_b1_prepared']['median_s']):.1f}x, batch 8 "
        f"{ratio(st['mt_decode_reference_b8']['median_s'], st['mt_decode_velocities_b8_prepared']['median_s']):.1f}x "
        f"(identical velocities: {st['mt_decode_identical_b1'] and st['mt_decode_identical_b8']})",
        "",
    ]
    return lines


def cpu_pair(t: dict) -> str:
    if t.get("server_cpu_s_per_request") is None:
        return "-"
    return f"{fmt_ms(t['server_cpu_s_per_request'])} / {t['server_cpu_outside_model_thread_s_per_request'] * 1e3:.2f}"


def render_targets(results: dict) -> list[str]:
    """Issue 17's targets beside what this run measured (rows for the sections that ran)."""
    rows = []
    ip, sv = results.get("inprocess"), results.get("service", {})
    if ip and "floor" in ip:
        b1 = ip["act"].get(1) or ip["act"].get("1")
        t = b1["cached_torch_prepared"]["median_s"]
        fl = ip.get("floor_same_turns", ip["floor"])
        rows.append(("1. default back end (prepared PyTorch) `act` b=1 <= 1.25x the bandwidth floor",
                     f"{fmt_ms(t)} ms / {fmt_ms(fl['bandwidth_floor_s'])} ms = {t / fl['bandwidth_floor_s']:.2f}x "
                     f"(roofline floor {fmt_ms(fl['roofline_floor_s'])} ms: {t / fl['roofline_floor_s']:.2f}x)",
                     t / fl["bandwidth_floor_s"] <= 1.25))
        for b, row in ip["act"].items():
            for precision, key in inprocess.LOW_PRECISION_ROWS:
                if str(b) != "16" or key not in row:
                    continue
                g = ratio(row["cached_torch_prepared"]["median_s"], row[key]["median_s"])
                a = row[key]
                rows.append((f"2. {precision} batch-16 `act` >= 2.5x fp32 requests/s; token agreement >= 99 %",
                             f"{g:.2f}x; agreement {a['token_agreement_vs_fp32'] * 100:.1f} %, largest action "
                             f"difference {a['max_abs_diff_vs_fp32']:.3g}", g >= 2.5 and a["token_agreement_vs_fp32"] >= 0.99))
    if "overhead" in sv:
        m = sv["overhead"]["act"]["msgpack"]
        rows.append(("3. HTTP msgpack overhead per `/act` b=1 <= 3 ms",
                     f"{m['overhead_mean_s'] * 1e3:.2f} ms (server CPU outside the model thread "
                     f"{m.get('server_cpu_outside_model_thread_s_per_request', float('nan')) * 1e3:.2f} ms per call)",
                     m["overhead_mean_s"] <= 0.003))
    act_on = sv.get("batched", {}).get("act", {})
    act_off = sv.get("unbatched", {}).get("act", {})
    if "16" in act_on and ("1" in act_on or "1" in act_off):
        one = (act_on.get("1") or act_off["1"])
        sixteen = act_on["16"]
        g = ratio(sixteen["requests_per_s"], one["requests_per_s"])
        single = (act_off.get("1") or one)["p50_s"]  # issue 8's bound: the unbatched one-client latency
        bound = sixteen["p99_s"] / (single * max(sixteen["mean_batch_requests"], 1))
        rows.append((f"4. 16 robots `/act` >= 3x the one-robot requests/s ({sv.get('precision', 'fp32')}), "
                     f"p99 < 2x (1-client p50 x mean batch)",
                     f"{sixteen['requests_per_s']:.2f} vs {one['requests_per_s']:.2f} req/s = {g:.2f}x; mean batch "
                     f"{sixteen['mean_batch_requests']:.1f}; p99 bound {bound:.2f}", g >= 3 and bound < 2))
    if not rows:
        return []
    return ["## Targets of issue 17 (this run)", "", "| target | measured | met? |", "|---|---|---|",
            *(f"| {a} | {b} | {'yes' if ok else 'no'} |" for a, b, ok in rows), ""]


def render_serving(r: dict, act_b1_s: float | None) -> list[str]:
    lines: list[str] = []
    if "overhead" in r:
        lines += [f"## 2. Service overhead over in-process calls (batch 1, unbatched server, {r['server_threads']} "
                  f"intra-op thread(s) in the server and in-process; server threads: {r.get('server_thread_policy')})", "",
                  "| endpoint | encoding | round trip p50 ms | in-process p50 ms | server model mean ms | "
                  "overhead per call ms (mean round trip - model) | p50 - in-process ms | request bytes | response bytes | "
                  "server CPU ms per call: all / outside the model thread |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for ep, row in r["overhead"].items():
            inp = row["inprocess"]["p50_s"]
            for enc in ("msgpack", "json"):
                t = row[enc]
                lines.append(f"| /{ep} | {enc} | {fmt_ms(t['p50_s'])} | {fmt_ms(inp)} | {fmt_ms(t['server_model_mean_s'])} | "
                             f"{t['overhead_mean_s'] * 1e3:.2f} | {(t['p50_s'] - inp) * 1e3:.2f} | {t['request_bytes']} | "
                             f"{t['response_bytes']} | {cpu_pair(t)} |")
        lines.append("")
    if "unbatched" in r:
        w = r.get("window", {})
        lines += [f"## 3. Throughput under concurrency (batch-1 requests, msgpack; batching = max_batch_size "
                  f"{r['max_batch_size']}, max_wait_ms {r['max_wait_ms']})", "",
                  f"Closed loop, steady state: each client sends back to back; the window opens once every client has "
                  f"completed one request and lasts {', '.join(f'{s:g} s on /{e}' for e, s in w.get('durations_s', {}).items())} "
                  f"(longer until {w.get('min_requests')} completions, at most {w.get('max_s')} s from the first request); "
                  f"only completions inside it count. Little's law: clients / mean time between a client's completions.", "",
                  "| endpoint | clients | batching | requests/s | (Little) | window s (requests) | p50 ms | p95 ms | p99 ms | "
                  "mean formed batch | req/s on / off | p99 / (1-client p50 x mean batch) | client / server CPU ms per request |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for ep in r["unbatched"]:
            for n, off in r["unbatched"][ep].items():
                on = r.get("batched", {}).get(ep, {}).get(n)
                for name, t in (("off", off), ("on", on)):
                    if t is None:
                        continue
                    single = r["unbatched"][ep]["1"]["p50_s"] if "1" in r["unbatched"][ep] else float("nan")
                    bound = t["p99_s"] / (single * max(t["mean_batch_requests"], 1))
                    gain = f"{ratio(on['requests_per_s'], off['requests_per_s']):.2f}x" if (on and name == "on") else ""
                    little = f"{t['requests_per_s_little']:.2f}" if t.get("requests_per_s_little") else "-"
                    cpu = "/".join("-" if t.get(k) is None else fmt_ms(t[k])
                                   for k in ("client_cpu_s_per_request", "server_cpu_s_per_request"))
                    lines.append(f"| /{ep} | {n} | {name} | {t['requests_per_s']:.2f} | {little} | "
                                 f"{t.get('window_s', t['wall_s']):.1f} ({t['requests']}) | {fmt_ms(t['p50_s'])} | "
                                 f"{fmt_ms(t['p95_s'])} | {fmt_ms(t['p99_s'])} | {t['mean_batch_requests']:.2f} | {gain} | "
                                 f"{bound:.2f} | {cpu} |")
        notes = [f"- /{ep} {n} clients, batching {mode}: {t['note']}" for mode, key in (("off", "unbatched"), ("on", "batched"))
                 for ep, levels in r.get(key, {}).items() for n, t in levels.items() if t.get("note")]
        lines += ([""] + notes if notes else []) + [""]
    return lines


def bundle_dir(args: argparse.Namespace, cache: Path) -> Path:
    """The benchmarked bundle: ``--bundle``, else a cached random one of the preset (``amplify init``)."""
    if args.bundle:
        return Path(args.bundle)
    out = cache / f"random-{args.preset}"
    if not (out / "config.json").exists():
        subprocess.run([sys.executable, "-m", "amplify", "init", "--preset", args.preset, "--out", str(out)],
                       check=True, cwd=Path(__file__).resolve().parents[1])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", help="bundle directory or original amplify.pt (default: a cached random bundle of --preset)")
    p.add_argument("--preset", default=None, help="preset of the random bundle (default: paper; small with --quick)")
    p.add_argument("--sections", default="inprocess,overhead,concurrency")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--cache", default=str(Path(__file__).parent / ".cache"),
                   help="where random bundles and exports are kept between runs")
    p.add_argument("--onnx", help="an ONNX export (with int8) of --bundle to reuse (default: export into --cache)")
    p.add_argument("--torchscript", help="a TorchScript export of --bundle to reuse (default: export into --cache)")
    p.add_argument("--no-export", action="store_true", help="time the PyTorch paths only")
    p.add_argument("--device", default="cpu", help="cpu or cuda (the GPU path; not measured on the 2-core box)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--server-threads", type=int, default=None,
                   help="intra-op threads of the benchmark servers and of the in-process calls they are compared "
                        "with (default: --threads; 1 keeps a server steady when clients share its cores)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--http-repeats", type=int, default=None, help="batch-1 HTTP calls per endpoint and encoding (20)")
    p.add_argument("--duration", type=float, default=None,
                   help="section 3: seconds of each /encode measurement window, opened once every client has "
                        "completed one request (5; 0.5 with --quick)")
    p.add_argument("--act-duration", type=float, default=None,
                   help="section 3: seconds of each /act measurement window (15; 1 with --quick)")
    p.add_argument("--min-requests", type=int, default=None,
                   help="section 3: least completions inside a window; it stays open until then (32; 4 with --quick)")
    p.add_argument("--max-s", type=float, default=120.0,
                   help="section 3: safety limit per level, from the first request: the window closes by then "
                        "(noted in the result) even short of --min-requests (120)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "bf16-all"],
                   help="sections 2-3: the benchmark servers' precision (fp32; bf16 and bf16-all are opt-in)")
    p.add_argument("--levels", default=None, help="section 3: concurrency levels, comma-separated (1,4,16,64; 1,4 with --quick)")
    p.add_argument("--endpoints", default="act,encode", help="section 3: endpoints to load (act,encode)")
    p.add_argument("--no-bf16", action="store_true", help="section 1: leave out the bfloat16 rows (bf16, bf16-all)")
    p.add_argument("--quick", action="store_true", help="small preset, few repeats, small load (the harness's smoke test)")
    args = p.parse_args(argv)
    args.preset = args.preset or ("small" if args.quick else "paper")
    repeats = args.repeats or (2 if args.quick else 5)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    bundle = bundle_dir(args, cache)
    model = AMPLIFY.load(str(bundle), args.device).eval()
    results = {"machine": machine_info(), "command": "python -m benchmarks.run_all " + " ".join(
        sys.argv[1:] if argv is None else argv), "bundle": str(bundle), "preset": args.preset,
        "device": args.device, "threads": args.threads,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    md = ["# Benchmark results", "", f"- command: `{results['command']}`", f"- date: {results['date']}",
          f"- bundle: {bundle} ({args.preset}), device {args.device}, {args.threads} threads",
          f"- machine: {json.dumps(results['machine'])}", ""]
    sections = args.sections.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M")

    def write() -> None:  # after every section, so an interrupted run keeps what it measured
        (out / f"{stamp}.json").write_text(json.dumps(results, indent=1, default=str))
        (out / f"{stamp}.md").write_text("\n".join(md) + "\n")

    if "inprocess" in sections:
        backends = {}
        if not args.no_export:
            from benchmarks.exports import ensure_export, load_backends

            tag = f"{bundle.name}-"
            onnx_dir = Path(args.onnx) if args.onnx else ensure_export(bundle, cache / f"{tag}onnx", "onnx", int8=True,
                                                                       threads=args.threads)
            ts_dir = Path(args.torchscript) if args.torchscript else ensure_export(bundle, cache / f"{tag}ts",
                                                                                   "torchscript", threads=args.threads)
            backends = load_backends(onnx_dir, ts_dir, args.threads, args.device)
            torch.set_num_threads(args.threads)
        print("section 1: in-process", flush=True)
        results["inprocess"] = inprocess.run(model, batches=(1, 4) if args.quick else (1, 4, 16), repeats=repeats,
                                             backends=backends, bf16=not args.no_bf16)
        md += render_inprocess(results["inprocess"])
        del backends
        write()
    serving_sections = tuple(s for s in ("overhead", "concurrency") if s in sections)
    if serving_sections:
        from benchmarks import serving

        model.prepare_for_inference()  # in-process comparisons run what the torch back end serves
        results["service"] = serving.run(
            str(bundle), model, threads=args.server_threads or args.threads, device=args.device,
            repeats=args.http_repeats or (5 if args.quick else 20),
            levels=tuple(int(n) for n in args.levels.split(",")) if args.levels else ((1, 4) if args.quick else (1, 4, 16, 64)),
            precision=args.precision, endpoints=tuple(args.endpoints.split(",")),
            durations={"encode": args.duration or (0.5 if args.quick else 5.0),
                       "act": args.act_duration or (1.0 if args.quick else 15.0)},
            min_requests=args.min_requests or (4 if args.quick else 32), max_s=args.max_s, sections=serving_sections)
        md += render_serving(results["service"], None)
        write()
    results["load_average_end"] = os.getloadavg()
    md += render_targets(results)
    md.append(f"- load average at the end: {results['load_average_end']}")
    write()
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
