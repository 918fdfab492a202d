"""Soak: many concurrent clients on mixed endpoints against a live ``amplify serve`` for minutes.

    python -m tests.reliability.soak --minutes 10 --clients 16 [--model DIR] [--out soak.json]

Without ``--model`` it serves a random ``small`` bundle written to a temporary directory. Prints a
line a minute and a JSON summary at the end: requests, failures, p50/p99 latency by endpoint, the
server's resident memory (start, warm = after the first fifth of the run, end, growth). Exits 1 on
any failed request. The figures in docs/reliability.md come from this command.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from tests.reliability.harness import LoadReport, ServerProcess, run_load


def _bundle(root: Path) -> Path:
    import torch

    from amplify.policy import AMPLIFY
    from amplify.presets import small

    torch.manual_seed(0)
    out = root / "small"
    AMPLIFY(small()).eval().save(out, {"name": "soak-small", "trained": False})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--max-batch", type=int, default=2, help="requests carry 1..max-batch samples")
    p.add_argument("--model", help="bundle to serve (default: a random small bundle)")
    p.add_argument("--threads", type=int, default=1, help="server's torch threads")
    p.add_argument("--out", help="also write the JSON summary here")
    p.add_argument("serve_args", nargs="*", metavar="key=value", help="extra `amplify serve` settings")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="amplify-soak-") as tmp:
        model = Path(args.model) if args.model else _bundle(Path(tmp))
        with ServerProcess(model, args=args.serve_args, threads=args.threads, log_dir=tmp) as server:
            t0 = time.time()

            def progress(report: LoadReport, elapsed: float) -> None:
                rss = report.rss_samples[-1][1] / 2**20 if report.rss_samples else float("nan")
                print(f"[{elapsed / 60:5.1f} min] requests {report.requests} failures {len(report.failures)} "
                      f"p99 {report.percentile(99) * 1000:.0f} ms rss {rss:.0f} MiB", flush=True)

            report = run_load(server.url, args.minutes * 60, args.clients, server.pid, max_batch=args.max_batch,
                              on_progress=progress, progress_every_s=60)
            summary = {"command": "python -m tests.reliability.soak " + " ".join(argv or sys.argv[1:]),
                       "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)), **report.summary(),
                       "server_alive": server.proc.poll() is None}
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 1 if report.failures or not summary["server_alive"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
