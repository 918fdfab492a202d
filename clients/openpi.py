"""A client of openpi's WebSocket policy protocol (``amplify serve`` at ``ws://host:port/``, or any
openpi policy server), with the :class:`~clients.AmplifyClient` ``act`` method, errors and retries.

    from clients import OpenPIClient
    with OpenPIClient("http://127.0.0.1:8000", api_key=key) as client:   # http(s):// or ws(s)://
        actions = client.act(images, proprio, text="put the bowl on the plate")   # (v,H,W,3) -> (A, 7)

The protocol carries one observation per frame and only the policy: ``act`` (a batch is sent as one
frame per sample over the one connection); the other methods raise
:class:`~clients.errors.UnsupportedOperationError`. Frames are msgpack with arrays in openpi's
encoding; the server's first frame (its metadata) is :meth:`metadata`. Imports numpy, msgpack,
websockets and httpx only.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect

from clients.client import ImagesLike, RetryPolicy, _ClientBase
from clients.codec import WireError, decode_openpi, encode_openpi
from clients.errors import (
    STATUS_OF_CODE, AmplifyError, AuthenticationError, ConnectionFailedError, OverloadedError, RequestTimeoutError,
    ServerError, UnsupportedOperationError, error_for,
)

CLOSE_TRY_AGAIN = 1013


def websocket_url(base_url: str, path: str = "/") -> str:
    """``http://h:p`` -> ``ws://h:p/`` (``https`` -> ``wss``); a ws(s) URL keeps its path."""
    parts = urlsplit(base_url if "://" in base_url else f"ws://{base_url}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path if parts.path not in ("", "/") else path, "", ""))


def pack(obj: dict[str, Any]) -> bytes:
    """An observation -> a frame (arrays in openpi's msgpack-numpy encoding; :mod:`clients.codec`)."""
    return encode_openpi(obj)


def unpack(frame: bytes) -> Any:
    """A reply or metadata frame -> its document, arrays as numpy (checked; never unpickled)."""
    try:
        return decode_openpi(frame)
    except WireError as e:
        raise AmplifyError(f"unreadable frame from the server: {e.message}") from None


class OpenPIClient(_ClientBase):
    """Blocking client over one WebSocket connection (reconnected after a drop). Thread-safe: calls
    are serialized on the connection."""

    protocol = "openpi"

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, api_key: str | None = None, timeout: float = 30.0,
                 retries: int | None = None, retry: RetryPolicy | None = None, expect_views: Sequence[str] | None = None,
                 expect_image_size: tuple[int, int] | None = None, expect_action_dim: int | None = None,
                 expect_proprio_dim: int | None = None, check_metadata: bool = True, connect: bool = True,
                 path: str = "/"):
        super().__init__(base_url, retry=retry, retries=retries, expect_views=expect_views,
                         expect_image_size=expect_image_size, expect_action_dim=expect_action_dim,
                         expect_proprio_dim=expect_proprio_dim, check_metadata=check_metadata)
        self.url = websocket_url(base_url, path)
        self.http_url = urlunsplit((("https" if self.url.startswith("wss") else "http"), urlsplit(self.url).netloc,
                                    "", "", ""))
        self.api_key = api_key
        self.timeout = timeout
        self._ws: ClientConnection | None = None
        self._lock = threading.RLock()
        if connect:
            self._with_retries(self._connect)

    # -- connection ----------------------------------------------------------------------------
    def __enter__(self) -> "OpenPIClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._ws is not None:
                self._ws.close()
                self._ws = None

    def _connect(self) -> None:
        headers = {"Authorization": f"Api-Key {self.api_key}"} if self.api_key else None
        try:
            # entered at once: a long-lived connection (closed by close()), as websockets>=17 asks
            ws = connect(self.url, additional_headers=headers, max_size=None, compression=None,
                         open_timeout=self.timeout, close_timeout=1).__enter__()
        except InvalidStatus as e:
            status = e.response.status_code
            body = e.response.body.decode("utf-8", "replace") if e.response.body else ""
            cls = AuthenticationError if status in (401, 403) else (OverloadedError if status in (429, 503) else ServerError)
            raise cls(body or f"the WebSocket handshake was refused with HTTP {status}", status=status,
                      code="unauthorized" if status == 401 else None) from None
        except (OSError, TimeoutError, WebSocketException) as e:
            raise ConnectionFailedError(f"{self.url}: {type(e).__name__}: {e}") from e
        try:
            first = ws.recv(timeout=self.timeout)
        except ConnectionClosed as e:
            ws.close()
            raise self._closed_error(e) from None
        except TimeoutError:
            ws.close()
            raise RequestTimeoutError(f"{self.url}: no metadata frame within {self.timeout:g} s") from None
        meta = unpack(first) if isinstance(first, bytes) else {}
        try:
            self._after_metadata(meta)
        except BaseException:
            ws.close()
            raise
        self._ws = ws

    @staticmethod
    def _closed_error(e: ConnectionClosed) -> AmplifyError:
        rcvd = e.rcvd
        code, reason = (rcvd.code, rcvd.reason) if rcvd is not None else (None, "")
        if code == CLOSE_TRY_AGAIN:
            return OverloadedError(f"the server closed the connection: {reason or 'try again later'}", status=503,
                                   code="overloaded")
        if code == 1011:
            return ServerError(f"the server closed the connection after a fault: {reason}", status=500,
                               code="internal_error")
        return ConnectionFailedError(f"the connection closed (code {code}): {reason}")

    def _with_retries(self, fn, *args: Any) -> Any:
        attempt = 0
        while True:
            try:
                return fn(*args)
            except (OverloadedError, ConnectionFailedError) as e:
                retryable = isinstance(e, OverloadedError) or self.retry.on_connect_error
                if not retryable or attempt >= self.retry.retries:
                    raise
                time.sleep(self.retry.wait(attempt, e.retry_after))
                attempt += 1

    # -- ops -------------------------------------------------------------------------------------
    def metadata(self, refresh: bool = False) -> dict[str, Any]:
        """The server's metadata frame (``/metadata`` plus the observation keys it expects)."""
        with self._lock:
            if self._meta is None or refresh:
                self.close()
                self._with_retries(self._connect)
            return self._meta  # type: ignore[return-value]

    def health(self) -> bool:
        """True when ``/healthz`` answers 200."""
        try:
            return httpx.get(f"{self.http_url}/healthz", timeout=self.timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def ready(self) -> bool:
        """True when ``/ready`` answers 200 (an ``amplify serve`` route)."""
        try:
            return httpx.get(f"{self.http_url}/ready", timeout=self.timeout).status_code == 200
        except httpx.HTTPError:
            return False

    # -- inference -------------------------------------------------------------------------------
    def infer(self, observation: Mapping[str, Any]) -> dict[str, Any]:
        """One raw observation dict (openpi keys) -> the reply dict; retried on overload and dropped connections."""
        frame = pack(dict(observation))
        return self._with_retries(self._exchange, frame)

    def _exchange(self, frame: bytes) -> dict[str, Any]:
        with self._lock:
            if self._ws is None:
                self._connect()
            ws = self._ws
            try:
                ws.send(frame)
                reply = ws.recv(timeout=self.timeout)
            except TimeoutError:
                self.close()
                raise RequestTimeoutError(f"no reply within the client timeout ({self.timeout:g} s)") from None
            except ConnectionClosed as e:
                self._ws = None
                raise self._closed_error(e) from None
        if isinstance(reply, str):
            raise self._text_error(reply)
        out = unpack(reply)
        if not isinstance(out, dict):
            raise AmplifyError(f"unexpected reply {type(out).__name__}")
        self.last_request_id = out.get("request_id")
        self.last_server_timing = out.get("server_timing")
        return out

    @staticmethod
    def _text_error(text: str) -> AmplifyError:
        try:
            body = json.loads(text)
        except ValueError:
            return ServerError(text[:2000], status=500)
        err = body.get("error") if isinstance(body, dict) else None
        status = STATUS_OF_CODE.get(err.get("code"), 500) if isinstance(err, dict) else 500
        return error_for(status, body)

    def observation(self, images: ImagesLike, proprio: Any, text: str | None = None, text_emb: Any = None,
                    sampling: str = "argmax", seed: int | None = None) -> dict[str, Any]:
        """One sample as openpi keys: ``observation/<view>`` (H, W, 3), ``observation/state``, ``prompt`` | ``text_emb``."""
        views = list((self.metadata() or {}).get("views") or [])
        if isinstance(images, Mapping):
            per_view = {v: np.asarray(images[v]) for v in views}
        else:
            arr = np.asarray(images)
            if arr.ndim != 4 or arr.shape[0] != len(views):
                raise ValueError(f"images: expected (v={len(views)}, H, W, 3) for views {views}, got shape {arr.shape}")
            per_view = dict(zip(views, arr))
        obs: dict[str, Any] = {f"observation/{v}": (img if img.dtype == np.uint8 else img.astype(np.float32))
                               for v, img in per_view.items()}
        obs["observation/state"] = np.asarray(proprio, dtype=np.float32)
        if (text is None) == (text_emb is None):
            raise ValueError("give exactly one of text (an instruction) or text_emb (an embedding)")
        if text is not None:
            obs["prompt"] = text
        else:
            obs["text_emb"] = np.asarray(text_emb, dtype=np.float32)
        if sampling != "argmax":
            obs["sampling"] = sampling
        if seed is not None:
            obs["seed"] = int(seed)
        return obs

    def act(self, images: ImagesLike, proprio: Any, text: str | Sequence[str] | None = None, *,
            text_emb: Any = None, sampling: str = "argmax", seed: int | None = None) -> np.ndarray:
        """Images (v,H,W,3) or {view: (H,W,3)}, proprio (P,), an instruction -> actions (A, action_dim);
        a batch (b,v,H,W,3), (b,P), b instructions -> (b, A, action_dim), one frame per sample."""
        imgs = images if isinstance(images, Mapping) else np.asarray(images)
        if not isinstance(imgs, Mapping) and imgs.ndim == 5:
            texts = [text] * len(imgs) if isinstance(text, str) else text
            embs = None if text_emb is None else np.asarray(text_emb)
            return np.stack([self.act(imgs[i], np.asarray(proprio)[i], None if texts is None else texts[i],
                                      text_emb=None if embs is None else embs[i], sampling=sampling, seed=seed)
                             for i in range(len(imgs))])
        if isinstance(text, (list, tuple)):
            text = text[0]
        out = self.infer(self.observation(imgs, proprio, text, text_emb, sampling, seed))
        return np.asarray(out["actions"])

    def _unsupported(self, name: str):
        raise UnsupportedOperationError(f"{name}: openpi's WebSocket protocol carries only act; use protocol='http' "
                                        "or 'v2' for the tokenizer and forward-dynamics calls", code="unsupported")

    def encode(self, *args: Any, **kwargs: Any):
        self._unsupported("encode")

    def decode(self, *args: Any, **kwargs: Any):
        self._unsupported("decode")

    def predict_codes(self, *args: Any, **kwargs: Any):
        self._unsupported("predict_codes")

    def predict_traj(self, *args: Any, **kwargs: Any):
        self._unsupported("predict_traj")
