"""``amplify serve``: run the inference service with uvicorn.

Every setting is a flag, an ``AMPLIFY_<NAME>`` environment variable, or a ``key=value`` override
(``amplify serve max_batch_size=32 request_timeout_s=5``); flags and overrides beat the environment.
"""
from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from typing import Any

from pydantic import ValidationError

from service.settings import ServiceSettings

log = logging.getLogger("amplify.service")


def _help(name: str) -> str:
    field = ServiceSettings.model_fields[name]
    return f"{field.description} (env AMPLIFY_{name.upper()}; default {field.default})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The common settings as flags; all of them as ``key=value`` overrides."""
    parser.add_argument("--model", help=_help("model"))
    parser.add_argument("--backend", choices=["torch", "torchscript", "onnx"], help=_help("backend"))
    parser.add_argument("--device", help=_help("device"))
    parser.add_argument("--precision", choices=["fp32", "bf16", "bf16-all", "float32", "bfloat16"], help=_help("precision"))
    parser.add_argument("--host", help=_help("host"))
    parser.add_argument("--port", type=int, help=_help("port"))
    parser.add_argument("--max-batch-size", type=int, dest="max_batch_size", help=_help("max_batch_size"))
    parser.add_argument("--max-wait-ms", type=float, dest="max_wait_ms", help=_help("max_wait_ms"))
    parser.add_argument("--queue-size", type=int, dest="queue_size", help=_help("queue_size"))
    parser.add_argument("--request-timeout-s", type=float, dest="request_timeout_s", help=_help("request_timeout_s"))
    parser.add_argument("--max-body-bytes", type=int, dest="max_body_bytes", help=_help("max_body_bytes"))
    parser.add_argument("--api-key", dest="api_key", help="require this key (prefer AMPLIFY_API_KEY: flags show in ps)")
    parser.add_argument("--text-encoder", dest="text_encoder", help=_help("text_encoder"))
    parser.add_argument("--threads", type=int, help=_help("threads"))
    parser.add_argument("--no-warmup", dest="warmup", action="store_false", default=None, help="skip the warm-up")
    parser.add_argument("--log-format", choices=["json", "text"], dest="log_format", help=_help("log_format"))
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="any setting: " + ", ".join(ServiceSettings.model_fields))


def build_settings(args: argparse.Namespace) -> ServiceSettings:
    """Flags and overrides on top of the environment; ValueError names a bad setting."""
    given: dict[str, Any] = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        key = key.strip().replace("-", "_")
        if key not in ServiceSettings.model_fields:
            raise ValueError(f"unknown setting {key!r}; known: {sorted(ServiceSettings.model_fields)}")
        given[key] = value
    for key in ServiceSettings.model_fields:
        value = getattr(args, key, None)
        if value is not None:
            given[key] = value
    return ServiceSettings(**given)


def run(args: argparse.Namespace) -> int:
    """Start the service; returns 1 when the settings are bad or the model fails to load."""
    try:
        settings = build_settings(args)
    except (ValueError, ValidationError) as e:
        print(f"amplify serve: {e}", file=sys.stderr)
        return 2
    try:  # bind before loading anything: a busy port is reported at once
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        # proto IPPROTO_TCP, not 0: only then does asyncio set TCP_NODELAY on accepted connections;
        # without it every response waits ~40 ms (Nagle on the body segment x the client's delayed ACK)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.host, settings.port))
    except OSError as e:
        print(f"amplify serve: cannot listen on {settings.host}:{settings.port}: {e}", file=sys.stderr)
        return 2
    import uvicorn

    from service.app import create_app
    from service.logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    failed: list[BaseException] = []
    server: uvicorn.Server | None = None

    def on_load_failure(e: BaseException) -> None:
        failed.append(e)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_load_failure=on_load_failure)
    # h11, not httptools: h11 bounds a request's head (a 2 MB header is refused), httptools does not.
    config = uvicorn.Config(app, host=settings.host, port=settings.port, access_log=False, log_config=None,
                            timeout_graceful_shutdown=10, http="h11",
                            ws="websockets-sansio", ws_max_size=settings.max_body_bytes)
    server = uvicorn.Server(config)
    log.info("starting", extra={"fields": {"host": settings.host, "port": settings.port, "backend": settings.backend,
                                           "model": settings.model or "default"}})
    # uvicorn re-raises a captured SIGTERM once its graceful shutdown is over, which would end the
    # process as killed by the signal (-15); by then in-flight requests are answered, so exit 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    server.run(sockets=[sock])
    if failed:
        print(f"amplify serve: the model failed to load: {failed[0]}", file=sys.stderr)
        return 1
    return 0
