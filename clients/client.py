"""Sync and async HTTP clients for the amplify-serve contract (docs/clients.md, shared spec API.md).

    from clients import AmplifyClient
    with AmplifyClient("http://127.0.0.1:8000", expect_views=["agentview", "eye_in_hand"],
                       expect_image_size=(128, 128), expect_action_dim=7) as client:
        actions = client.act(images, proprio, text="pick up the red cube")   # (v,H,W,3) -> (A, 7)

Arrays go in and come out as numpy. A single observation (no batch axis) gets one added and
stripped from the result; a batch stays a batch. Imports numpy, httpx and msgpack only.
"""
from __future__ import annotations

import asyncio
import email.utils
import random
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import httpx
import numpy as np

from clients.codec import FORMATS, JSON, decode_body, encode_body
from clients.errors import (
    AmplifyError, ConnectionFailedError, IncompatibleModelError, OverloadedError, RequestTimeoutError, error_for,
)

ImagesLike = Any  # np.ndarray (v,H,W,3) | (b,v,H,W,3) | Mapping[view, (H,W,3) | (b,H,W,3)]
RETRY_STATUSES = (429, 503)
# failures of a request that are retried like a refused connection (the request may not have reached the server)
_CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError,
                   httpx.WriteError, httpx.PoolTimeout)


@dataclass
class RetryPolicy:
    """Retries on 429/503 (and connection errors when ``on_connect_error``), exponential backoff.

    The wait before retry k (0-based) is ``min(max_backoff, backoff * 2**k)`` with +-``jitter``
    (a fraction), or the server's ``Retry-After`` when it sent one (capped at ``max_backoff``).
    """

    retries: int = 3
    backoff: float = 0.1
    max_backoff: float = 10.0
    jitter: float = 0.1
    on_connect_error: bool = True

    def wait(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return max(0.0, min(self.max_backoff, retry_after))
        base = min(self.max_backoff, self.backoff * (2 ** attempt))
        return base * (1 + random.uniform(-self.jitter, self.jitter))


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


@dataclass
class Expectations:
    """What the caller can feed; checked against ``/metadata`` when the client connects."""

    views: Sequence[str] | None = None
    image_size: tuple[int, int] | None = None
    action_dim: int | None = None
    proprio_dim: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self, meta: Mapping[str, Any]) -> None:
        """Raise :class:`IncompatibleModelError` naming every mismatch."""
        problems = []
        if self.views is not None and list(meta.get("views", [])) != list(self.views):
            problems.append(f"views: model has {meta.get('views')}, client feeds {list(self.views)}")
        if self.image_size is not None and list(meta.get("image_size", [])) != list(self.image_size):
            problems.append(f"image_size: model wants {meta.get('image_size')}, client feeds {list(self.image_size)}")
        if self.action_dim is not None and meta.get("action_dim") != self.action_dim:
            problems.append(f"action_dim: model gives {meta.get('action_dim')}, client executes {self.action_dim}")
        if self.proprio_dim is not None and meta.get("proprio_dim") != self.proprio_dim:
            problems.append(f"proprio_dim: model wants {meta.get('proprio_dim')}, client feeds {self.proprio_dim}")
        for key, want in self.extra.items():
            if meta.get(key) != want:
                problems.append(f"{key}: model has {meta.get(key)!r}, client expects {want!r}")
        if problems:
            name = meta.get("model", {}).get("name") if isinstance(meta.get("model"), dict) else None
            raise IncompatibleModelError(f"served model {name!r} cannot be used: " + "; ".join(problems),
                                         code="incompatible_model")


# ---------------------------------------------------------------------------------------------
# Request building and response shaping, shared by both clients.
# ---------------------------------------------------------------------------------------------
class _Call:
    """One endpoint call: the payload, and whether the batch axis was added (to strip it after)."""

    def __init__(self, path: str, payload: dict[str, Any], single: bool, fields: Sequence[str]):
        self.path, self.payload, self.single, self.fields = path, payload, single, tuple(fields)

    def shape(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise AmplifyError(f"{self.path}: unexpected response body {type(body).__name__}")
        out = {}
        for key, value in body.items():
            if isinstance(value, np.ndarray) and self.single and value.ndim >= 1 and value.shape[0] == 1:
                value = value[0]
            out[key] = value
        missing = [f for f in self.fields if f not in out]
        if missing:
            raise AmplifyError(f"{self.path}: response lacks {missing}; got {sorted(out)}")
        return out


def _array(x: Any, name: str, dtype: Any | None = None) -> np.ndarray:
    try:
        arr = np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: cannot be read as a numeric array ({e})") from None
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    return arr


def _float_array(x: Any, name: str) -> np.ndarray:
    arr = _array(x, name)
    return arr if arr.dtype in (np.float16, np.float32, np.float64) else arr.astype(np.float32)


class _ClientBase:
    """What every client holds, whatever its protocol: the server's address, the retry policy, what
    the caller feeds (checked against the served model's metadata) and the last call's request id
    and server timing."""

    def __init__(self, base_url: str, *, retry: RetryPolicy | None, retries: int | None,
                 expect_views: Sequence[str] | None, expect_image_size: tuple[int, int] | None,
                 expect_action_dim: int | None, expect_proprio_dim: int | None, check_metadata: bool):
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        if retries is not None:
            self.retry.retries = int(retries)
        self.expect = Expectations(expect_views, tuple(expect_image_size) if expect_image_size else None,
                                   expect_action_dim, expect_proprio_dim)
        self.check_metadata = check_metadata
        self._meta: dict[str, Any] | None = None
        self.last_request_id: str | None = None
        self.last_server_timing: Any = None

    def _after_metadata(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Check the served model's metadata against the expectations (when asked) and keep it."""
        if self.check_metadata:
            self.expect.check(meta)
        self._meta = meta
        return meta


class _HTTPClientBase(_ClientBase):
    """The retry loop over httpx, shared by the REST clients (sync and async) and the v2 client: each
    ``_send`` only sends and sleeps; :meth:`_after_attempt` decides."""

    def _error(self, resp: httpx.Response) -> AmplifyError:
        """The typed error of a 4xx/5xx answer (the REST error body; the v2 client overrides it)."""
        try:
            body = decode_body(resp.content, resp.headers.get("content-type"))
        except Exception:  # noqa: BLE001 - an unreadable error body is still an error
            body = resp.text
        return error_for(resp.status_code, body, resp.headers.get("x-request-id"),
                         parse_retry_after(resp.headers.get("retry-after")))

    def _record(self, resp: httpx.Response) -> None:
        self.last_request_id = resp.headers.get("x-request-id")
        self.last_server_timing = resp.headers.get("server-timing")

    def _after_attempt(self, method: str, path: str, attempt: int, retry: bool, resp: httpx.Response | None,
                       error: Exception | None) -> float | None:
        """After one attempt, the seconds to wait before the next, or None when ``resp`` is the
        answer; raises the typed error when the outcome is final."""
        may_retry = retry and attempt < self.retry.retries
        if error is not None:
            # A connect or pool timeout never reached the server: retried like a refused connection.
            reached = isinstance(error, httpx.TimeoutException) and not isinstance(
                error, (httpx.ConnectTimeout, httpx.PoolTimeout))
            if not reached and may_retry and self.retry.on_connect_error:
                return self.retry.wait(attempt, None)
            if isinstance(error, httpx.TimeoutException):
                raise RequestTimeoutError(f"{method} {path}: no response within the client timeout ({error})") from error
            raise ConnectionFailedError(f"{method} {self.base_url}{path}: {type(error).__name__}: {error}") from error
        assert resp is not None
        self._record(resp)
        if resp.status_code in RETRY_STATUSES and may_retry:
            return self.retry.wait(attempt, parse_retry_after(resp.headers.get("retry-after")))
        if resp.status_code >= 400:
            raise self._error(resp)
        return None

    def _send_blocking(self, http: httpx.Client, method: str, path: str, content: bytes | None = None,
                       headers: Mapping[str, str] | None = None, retry: bool = True) -> httpx.Response:
        """One blocking request with the retry policy applied."""
        attempt = 0
        while True:
            try:
                resp, error = http.request(method, path, content=content, headers=headers), None
            except (httpx.TimeoutException, *_CONNECT_ERRORS) as e:
                resp, error = None, e
            wait = self._after_attempt(method, path, attempt, retry, resp, error)
            if wait is None:
                return resp  # type: ignore[return-value]
            time.sleep(wait)
            attempt += 1


class _Core(_HTTPClientBase):
    """Builds the REST payloads from numpy inputs; the transport lives in the subclasses."""

    def __init__(self, base_url: str, *, api_key: str | None, timeout: float | httpx.Timeout, format: str,
                 retry: RetryPolicy | None, retries: int | None, expect_views: Sequence[str] | None,
                 expect_image_size: tuple[int, int] | None, expect_action_dim: int | None,
                 expect_proprio_dim: int | None, check_metadata: bool, headers: Mapping[str, str] | None):
        if format not in FORMATS:
            raise ValueError(f"format: expected one of {sorted(FORMATS)}, got {format!r}")
        super().__init__(base_url, retry=retry, retries=retries, expect_views=expect_views,
                         expect_image_size=expect_image_size, expect_action_dim=expect_action_dim,
                         expect_proprio_dim=expect_proprio_dim, check_metadata=check_metadata)
        self.content_type = FORMATS[format]
        self._headers = {"Content-Type": self.content_type, "Accept": self.content_type, **(headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)

    # -- images and the batch axis ----------------------------------------------------------
    def _images(self, images: ImagesLike) -> tuple[np.ndarray, bool]:
        """(v,H,W,3) or (b,v,H,W,3), or {view: (H,W,3) | (b,H,W,3)} stacked in the model's view order."""
        if isinstance(images, Mapping):
            views = (self._meta or {}).get("views") or list(images)
            missing = [v for v in views if v not in images]
            if missing:
                raise ValueError(f"images: missing view(s) {missing}; the model's views are {views}")
            per_view = [_array(images[v], f"images[{v!r}]") for v in views]
            arr = np.stack(per_view, axis=-4)  # (..., v, H, W, 3)
        else:
            arr = _array(images, "images")
        if arr.ndim not in (4, 5) or arr.shape[-1] != 3:
            raise ValueError(f"images: expected (v, H, W, 3) or (b, v, H, W, 3), got shape {arr.shape}")
        if arr.dtype != np.uint8:
            arr = arr.astype(np.float32) if arr.dtype != np.float32 else arr
        single = arr.ndim == 4
        return (arr[None] if single else arr), single

    @staticmethod
    def _batch(x: Any, name: str, single: bool, item_ndim: int, float_: bool = True) -> np.ndarray:
        arr = _float_array(x, name) if float_ else _array(x, name)
        want = item_ndim if single else item_ndim + 1
        if arr.ndim != want:
            kind = "a single observation" if single else "a batch"
            raise ValueError(f"{name}: expected {want} dims for {kind}, got shape {arr.shape}")
        return arr[None] if single else arr

    def _text_fields(self, payload: dict, single: bool, text: str | Sequence[str] | None, text_emb: Any) -> None:
        if (text is None) == (text_emb is None):
            raise ValueError("give exactly one of text (instruction strings) or text_emb (embeddings)")
        if text is not None:
            if isinstance(text, str):
                text = [text]
            payload["text"] = list(text)
        else:
            payload["text_emb"] = self._batch(text_emb, "text_emb", single, 1)

    # -- payloads ---------------------------------------------------------------------------
    def _encode_call(self, tracks: Any, velocities: Any, return_codes: bool) -> _Call:
        if (tracks is None) == (velocities is None):
            raise ValueError("give exactly one of tracks (v,H,n,2) or velocities (v,t,n,2), batched or not")
        name, x = ("tracks", tracks) if tracks is not None else ("velocities", velocities)
        arr = _float_array(x, name)
        if arr.ndim not in (4, 5):
            raise ValueError(f"{name}: expected (v, H, n, 2) or (b, v, H, n, 2), got shape {arr.shape}")
        single = arr.ndim == 4
        payload = {name: arr[None] if single else arr, "return_codes": bool(return_codes)}
        return _Call("/encode", payload, single, ["indices"] + (["codes"] if return_codes else []))

    def _decode_call(self, indices: Any, codes: Any, init_points: Any, return_logits: bool) -> _Call:
        if (indices is None) == (codes is None):
            raise ValueError("give exactly one of indices (S,) / (b,S) or codes (S,h) / (b,S,h)")
        if indices is not None:
            arr = _array(indices, "indices")
            if arr.dtype.kind not in "iu":
                raise ValueError(f"indices: expected integers, got dtype {arr.dtype}")
            arr = arr.astype(np.int64) if arr.dtype not in (np.int32, np.int64) else arr
            single = arr.ndim == 1
            payload: dict[str, Any] = {"indices": arr[None] if single else arr}
        else:
            arr = _float_array(codes, "codes")
            single = arr.ndim == 2
            payload = {"codes": arr[None] if single else arr}
        if init_points is not None:
            payload["init_points"] = self._batch(init_points, "init_points", single, 3)
        payload["return_logits"] = bool(return_logits)
        fields = ["velocities"] + (["tracks"] if init_points is not None else []) + (["logits"] if return_logits else [])
        return _Call("/decode", payload, single, fields)

    def _predict_payload(self, images: ImagesLike, text: Any, text_emb: Any, sampling: str,
                         seed: int | None) -> tuple[dict[str, Any], bool]:
        imgs, single = self._images(images)
        payload: dict[str, Any] = {"images": imgs, "sampling": sampling}
        self._text_fields(payload, single, text, text_emb)
        if seed is not None:
            payload["seed"] = int(seed)
        return payload, single

    def _predict_codes_call(self, images, text, text_emb, sampling, seed, return_codes) -> _Call:
        payload, single = self._predict_payload(images, text, text_emb, sampling, seed)
        payload["return_codes"] = bool(return_codes)
        return _Call("/predict_codes", payload, single, ["indices"] + (["codes"] if return_codes else []))

    def _predict_traj_call(self, images, init_points, text, text_emb, sampling, seed) -> _Call:
        payload, single = self._predict_payload(images, text, text_emb, sampling, seed)
        payload["init_points"] = self._batch(init_points, "init_points", single, 3)
        return _Call("/predict_traj", payload, single, ["tracks"])

    def _act_call(self, images, proprio, text, text_emb, sampling, seed) -> _Call:
        payload, single = self._predict_payload(images, text, text_emb, sampling, seed)
        payload["proprio"] = self._batch(proprio, "proprio", single, 1)
        return _Call("/act", payload, single, ["actions"])


class AmplifyClient(_Core):
    """Blocking client; one connection pool reused for every call. Use as a context manager or call
    :meth:`close`. ``format="json"`` sends JSON instead of msgpack. The served model's ``/metadata``
    is fetched and checked against ``expect_*`` on construction (``connect=False`` defers it to the
    first call that needs it)."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, api_key: str | None = None,
                 timeout: float | httpx.Timeout = 30.0, format: str = "msgpack", retries: int | None = None,
                 retry: RetryPolicy | None = None, expect_views: Sequence[str] | None = None,
                 expect_image_size: tuple[int, int] | None = None, expect_action_dim: int | None = None,
                 expect_proprio_dim: int | None = None, check_metadata: bool = True, connect: bool = True,
                 headers: Mapping[str, str] | None = None, transport: httpx.BaseTransport | None = None,
                 max_connections: int = 16):
        super().__init__(base_url, api_key=api_key, timeout=timeout, format=format, retry=retry, retries=retries,
                         expect_views=expect_views, expect_image_size=expect_image_size,
                         expect_action_dim=expect_action_dim, expect_proprio_dim=expect_proprio_dim,
                         check_metadata=check_metadata, headers=headers)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=self._timeout,
                                  transport=transport,
                                  limits=httpx.Limits(max_connections=max_connections,
                                                      max_keepalive_connections=max_connections))
        if connect:
            try:
                self.metadata(refresh=True)
            except BaseException:
                self._http.close()
                raise

    def __enter__(self) -> "AmplifyClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _send(self, method: str, path: str, payload: dict | None = None, retry: bool = True) -> httpx.Response:
        body = None if payload is None else encode_body(payload, self.content_type)
        return self._send_blocking(self._http, method, path, body, retry=retry)

    def _call(self, call: _Call) -> dict[str, Any]:
        if self._meta is None and self.check_metadata:
            self.metadata(refresh=True)
        resp = self._send("POST", call.path, call.payload)
        return call.shape(decode_body(resp.content, resp.headers.get("content-type")))

    # -- ops --------------------------------------------------------------------------------
    def metadata(self, refresh: bool = False) -> dict[str, Any]:
        """The served model's ``/metadata`` (cached; checked against the ``expect_*`` arguments)."""
        if self._meta is None or refresh:
            resp = self._send("GET", "/metadata")
            self._after_metadata(decode_body(resp.content, resp.headers.get("content-type") or JSON))
        return self._meta  # type: ignore[return-value]

    def health(self) -> bool:
        """True when the process answers ``/health`` with 200 (no retries)."""
        try:
            return self._http.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    def ready(self) -> bool:
        """True when ``/ready`` answers 200 (models loaded and warm)."""
        try:
            return self._http.get("/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 120.0, interval: float = 0.25) -> None:
        """Block until ``/ready`` is 200, else raise :class:`OverloadedError` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise OverloadedError(f"{self.base_url} not ready after {timeout:.0f} s", code="not_ready")
            time.sleep(interval)

    def metrics(self) -> str:
        """The Prometheus text of ``/metrics``."""
        return self._send("GET", "/metrics").text

    # -- inference --------------------------------------------------------------------------
    def encode(self, tracks: Any = None, *, velocities: Any = None, return_codes: bool = False) -> dict[str, np.ndarray]:
        """Tracks (v,H,n,2) or (b,v,H,n,2) in [-1, 1] (row, col), or velocities -> ``{"indices": (b,S)
        [, "codes": (b,S,h)]}`` (no batch axis for a single input)."""
        return self._call(self._encode_call(tracks, velocities, return_codes))

    def decode(self, indices: Any = None, *, codes: Any = None, init_points: Any = None,
               return_logits: bool = False) -> dict[str, np.ndarray]:
        """Indices (S,)/(b,S) or codes -> ``{"velocities", ["tracks" with init_points], ["logits"]}``."""
        return self._call(self._decode_call(indices, codes, init_points, return_logits))

    def predict_codes(self, images: ImagesLike, text: str | Sequence[str] | None = None, *, text_emb: Any = None,
                      sampling: str = "argmax", seed: int | None = None,
                      return_codes: bool = False) -> dict[str, np.ndarray]:
        """Images + instruction -> ``{"indices": (b,S)[, "codes"]}``."""
        return self._call(self._predict_codes_call(images, text, text_emb, sampling, seed, return_codes))

    def predict_traj(self, images: ImagesLike, init_points: Any, text: str | Sequence[str] | None = None, *,
                     text_emb: Any = None, sampling: str = "argmax", seed: int | None = None) -> np.ndarray:
        """Images + initial points (v,n,2)/(b,v,n,2) + instruction -> tracks (b,v,H,n,2)."""
        return self._call(self._predict_traj_call(images, init_points, text, text_emb, sampling, seed))["tracks"]

    def act(self, images: ImagesLike, proprio: Any, text: str | Sequence[str] | None = None, *,
            text_emb: Any = None, sampling: str = "argmax", seed: int | None = None) -> np.ndarray:
        """Images + proprio (9,)/(b,9) + instruction -> actions (A, action_dim) / (b, A, action_dim)."""
        return self._call(self._act_call(images, proprio, text, text_emb, sampling, seed))["actions"]


class AsyncAmplifyClient(_Core):
    """The asyncio client: same methods as :class:`AmplifyClient`, awaited. Use
    ``async with AsyncAmplifyClient(url, ...) as client`` (connects and checks ``/metadata``) or
    ``await client.connect()`` then ``await client.aclose()``."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, api_key: str | None = None,
                 timeout: float | httpx.Timeout = 30.0, format: str = "msgpack", retries: int | None = None,
                 retry: RetryPolicy | None = None, expect_views: Sequence[str] | None = None,
                 expect_image_size: tuple[int, int] | None = None, expect_action_dim: int | None = None,
                 expect_proprio_dim: int | None = None, check_metadata: bool = True,
                 headers: Mapping[str, str] | None = None, transport: httpx.AsyncBaseTransport | None = None,
                 max_connections: int = 64):
        super().__init__(base_url, api_key=api_key, timeout=timeout, format=format, retry=retry, retries=retries,
                         expect_views=expect_views, expect_image_size=expect_image_size,
                         expect_action_dim=expect_action_dim, expect_proprio_dim=expect_proprio_dim,
                         check_metadata=check_metadata, headers=headers)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=self._timeout,
                                       transport=transport,
                                       limits=httpx.Limits(max_connections=max_connections,
                                                           max_keepalive_connections=max_connections))
        self._meta_lock: asyncio.Lock | None = None

    async def __aenter__(self) -> "AsyncAmplifyClient":
        try:
            await self.connect()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def connect(self) -> dict[str, Any]:
        """Fetch and check ``/metadata``."""
        return await self.metadata(refresh=True)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _send(self, method: str, path: str, payload: dict | None = None, retry: bool = True) -> httpx.Response:
        body = None if payload is None else encode_body(payload, self.content_type)
        attempt = 0
        while True:
            try:
                resp, error = await self._http.request(method, path, content=body), None
            except (httpx.TimeoutException, *_CONNECT_ERRORS) as e:
                resp, error = None, e
            wait = self._after_attempt(method, path, attempt, retry, resp, error)
            if wait is None:
                return resp  # type: ignore[return-value]
            await asyncio.sleep(wait)
            attempt += 1

    async def _call(self, call: _Call) -> dict[str, Any]:
        if self._meta is None and self.check_metadata:
            await self.metadata()
        resp = await self._send("POST", call.path, call.payload)
        return call.shape(decode_body(resp.content, resp.headers.get("content-type")))

    async def metadata(self, refresh: bool = False) -> dict[str, Any]:
        """The served model's ``/metadata`` (cached; checked against the ``expect_*`` arguments)."""
        if self._meta_lock is None:
            self._meta_lock = asyncio.Lock()
        async with self._meta_lock:
            if self._meta is None or refresh:
                resp = await self._send("GET", "/metadata")
                self._after_metadata(decode_body(resp.content, resp.headers.get("content-type") or JSON))
        return self._meta  # type: ignore[return-value]

    async def health(self) -> bool:
        try:
            return (await self._http.get("/health")).status_code == 200
        except httpx.HTTPError:
            return False

    async def ready(self) -> bool:
        try:
            return (await self._http.get("/ready")).status_code == 200
        except httpx.HTTPError:
            return False

    async def metrics(self) -> str:
        return (await self._send("GET", "/metrics")).text

    async def encode(self, tracks: Any = None, *, velocities: Any = None, return_codes: bool = False) -> dict[str, np.ndarray]:
        """See :meth:`AmplifyClient.encode`."""
        return await self._call(self._encode_call(tracks, velocities, return_codes))

    async def decode(self, indices: Any = None, *, codes: Any = None, init_points: Any = None,
                     return_logits: bool = False) -> dict[str, np.ndarray]:
        """See :meth:`AmplifyClient.decode`."""
        return await self._call(self._decode_call(indices, codes, init_points, return_logits))

    async def predict_codes(self, images: ImagesLike, text: str | Sequence[str] | None = None, *, text_emb: Any = None,
                            sampling: str = "argmax", seed: int | None = None,
                            return_codes: bool = False) -> dict[str, np.ndarray]:
        """See :meth:`AmplifyClient.predict_codes`."""
        return await self._call(self._predict_codes_call(images, text, text_emb, sampling, seed, return_codes))

    async def predict_traj(self, images: ImagesLike, init_points: Any, text: str | Sequence[str] | None = None, *,
                           text_emb: Any = None, sampling: str = "argmax", seed: int | None = None) -> np.ndarray:
        """See :meth:`AmplifyClient.predict_traj`."""
        call = self._predict_traj_call(images, init_points, text, text_emb, sampling, seed)
        return (await self._call(call))["tracks"]

    async def act(self, images: ImagesLike, proprio: Any, text: str | Sequence[str] | None = None, *,
                  text_emb: Any = None, sampling: str = "argmax", seed: int | None = None) -> np.ndarray:
        """See :meth:`AmplifyClient.act`."""
        return (await self._call(self._act_call(images, proprio, text, text_emb, sampling, seed)))["actions"]
