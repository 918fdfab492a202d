"""A client of the KServe v2 / Open Inference Protocol (``amplify serve`` at ``/v2``, or Triton
serving ``amplify export --format triton``), with the :class:`~clients.AmplifyClient` methods,
errors and retries.

    from clients import V2Client
    with V2Client("http://127.0.0.1:8000", api_key=key) as client:          # or a Triton server
        actions = client.act(images, proprio, text_emb=emb)                  # (v,H,W,3) -> (A, 7)
        indices = client.encode(tracks)["indices"]

Tensors travel in the binary tensor extension (``binary=False``: JSON ``data``). The models are the
export's (``amplify_act``, ``amplify_predict_codes``, ``amplify_encode``, ``amplify_decode``,
``amplify_indices_to_codes``); ``decode`` from indices and ``predict_traj`` are composed here from
them. Instructions as ``text`` are embedded by the export's table (``export_dir=``: its
``instructions.json`` and ``text_embeddings.npy``) or, on ``amplify serve``, by its
``amplify_text_embed`` model. Against Triton, images must have the export's size (``amplify serve``
resizes any size). Imports numpy and httpx only.
"""
from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path
from typing import Any, Mapping, Sequence

import httpx
import numpy as np

from clients.client import ImagesLike, RetryPolicy, _HTTPClientBase, parse_retry_after
from clients.codec import V2_DATATYPES, v2_tensor_entry
from clients.errors import AmplifyError, error_for

HEADER = "Inference-Header-Content-Length"


def _bytes_tensor(texts: Sequence[str]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in (t.encode() for t in texts))


def build_request(inputs: dict[str, np.ndarray | list[str]], outputs: Sequence[str] | None, binary: bool,
                  parameters: dict[str, Any] | None = None) -> tuple[bytes, dict[str, str]]:
    """Named inputs -> (body, headers) of a v2 infer request (binary tensors unless ``binary=False``)."""
    entries, blobs = [], []
    for name, value in inputs.items():
        if isinstance(value, list):  # BYTES
            entry: dict[str, Any] = {"name": name, "datatype": "BYTES", "shape": [len(value)]}
            if binary:
                blob = _bytes_tensor(value)
                entry["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                entry["data"] = list(value)
        else:
            entry = v2_tensor_entry(name, value, binary, blobs)
        entries.append(entry)
    doc: dict[str, Any] = {"inputs": entries}
    if outputs is not None:
        doc["outputs"] = [{"name": o, "parameters": {"binary_data": binary}} for o in outputs]
    if parameters:
        doc["parameters"] = dict(parameters)
    if binary and outputs is None:
        doc.setdefault("parameters", {})["binary_data_output"] = True
    head = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return head, {"Content-Type": "application/json"}
    return b"".join([head, *blobs]), {HEADER: str(len(head)), "Content-Type": "application/octet-stream"}


def parse_response(body: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    """A v2 infer response -> {output name: numpy array}."""
    n = int(header_length) if header_length else len(body)
    doc = json.loads(body[:n])
    out, offset = {}, n
    for o in doc.get("outputs", []):
        dt, shape = V2_DATATYPES.get(o["datatype"]), tuple(o["shape"])
        if dt is None:
            raise AmplifyError(f"output {o['name']}: datatype {o['datatype']} is not supported by this client")
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            out[o["name"]] = np.frombuffer(body[offset:offset + size], dtype=dt).reshape(shape)
            offset += size
        else:
            out[o["name"]] = np.asarray(o["data"], dtype=dt).reshape(shape)
    return out


class _TextTable:
    """Instructions -> embeddings from an export's ``instructions.json`` + ``text_embeddings.npy``."""

    def __init__(self, export_dir: str | Path):
        d = Path(export_dir)
        files = {}
        if (d / "manifest.json").is_file():  # the manifest names the files (exporters.manifest)
            files = json.loads((d / "manifest.json").read_text()).get("instructions") or {}
        names = json.loads((d / files.get("file", "instructions.json")).read_text())
        self.index = {s: i for i, s in enumerate(names)}
        self.table = np.load(d / files.get("embeddings", "text_embeddings.npy"), allow_pickle=False).astype(np.float32)

    def __call__(self, texts: Sequence[str]) -> np.ndarray | None:
        if any(t not in self.index for t in texts):
            return None
        return self.table[[self.index[t] for t in texts]]


class V2Client(_HTTPClientBase):
    """Blocking v2 client; one connection pool. Same methods and errors as :class:`~clients.AmplifyClient`."""

    protocol = "v2"

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, api_key: str | None = None,
                 timeout: float | httpx.Timeout = 30.0, retries: int | None = None, retry: RetryPolicy | None = None,
                 expect_views: Sequence[str] | None = None, expect_image_size: tuple[int, int] | None = None,
                 expect_action_dim: int | None = None, expect_proprio_dim: int | None = None,
                 check_metadata: bool = True, connect: bool = True, binary: bool = True,
                 export_dir: str | Path | None = None, headers: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None, max_connections: int = 16):
        super().__init__(base_url, retry=retry, retries=retries, expect_views=expect_views,
                         expect_image_size=expect_image_size, expect_action_dim=expect_action_dim,
                         expect_proprio_dim=expect_proprio_dim, check_metadata=check_metadata)
        self.binary = binary
        self.export_dir = Path(export_dir) if export_dir else None
        self._table = _TextTable(self.export_dir) if self.export_dir and (self.export_dir / "instructions.json").is_file() \
            else None
        h = dict(headers or {})
        if api_key:
            h["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(base_url=self.base_url, headers=h, timeout=timeout, transport=transport,
                                  limits=httpx.Limits(max_connections=max_connections,
                                                      max_keepalive_connections=max_connections))
        self._server: dict[str, Any] | None = None
        if connect:
            try:
                self.metadata(refresh=True)
            except BaseException:
                self._http.close()
                raise

    def __enter__(self) -> "V2Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- transport -------------------------------------------------------------------------------
    def _send(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
        return self._send_blocking(self._http, method, path, body, headers)

    def _error(self, resp: httpx.Response) -> AmplifyError:
        """The typed error of a v2 error answer (``{"error": "<message>"}``)."""
        try:
            body_json = resp.json()
        except ValueError:
            body_json = {"error": resp.text[:500]}
        message = body_json.get("error") if isinstance(body_json, dict) else None
        return error_for(resp.status_code, {"error": {"message": message if isinstance(message, str)
                                                      else json.dumps(message)}},
                         resp.headers.get("x-request-id"), parse_retry_after(resp.headers.get("retry-after")))

    def infer(self, model: str, inputs: dict[str, np.ndarray | list[str]], outputs: Sequence[str] | None = None,
              parameters: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        """``POST /v2/models/{model}/infer`` on named numpy inputs -> named numpy outputs."""
        body, headers = build_request(inputs, outputs, self.binary, parameters)
        resp = self._send("POST", f"/v2/models/{model}/infer", body, headers)
        return parse_response(resp.content, resp.headers.get(HEADER))

    # -- ops ---------------------------------------------------------------------------------
    def server_metadata(self) -> dict[str, Any]:
        """``GET /v2``: {"name", "version", "extensions"}."""
        if self._server is None:
            self._server = self._send("GET", "/v2").json()
        return self._server

    @property
    def is_amplify_serve(self) -> bool:
        return self.server_metadata().get("name") == "amplify-serve"

    def metadata(self, refresh: bool = False) -> dict[str, Any]:
        """The served model's facts in ``/metadata``'s names, from the v2 model metadata (tensor shapes),
        ``amplify serve``'s extension key, and the export's manifest when ``export_dir`` is given."""
        if self._meta is not None and not refresh:
            return self._meta
        meta: dict[str, Any] = {}
        if self.export_dir and (self.export_dir / "manifest.json").is_file():
            manifest = json.loads((self.export_dir / "manifest.json").read_text())
            meta.update(manifest.get("metadata", {}))
            meta["model"] = manifest.get("model")
        for name in ("amplify_act", "amplify_encode"):
            try:
                doc = self._send("GET", f"/v2/models/{name}").json()
            except AmplifyError as e:
                if e.status == 404:
                    continue
                raise
            meta.update(doc.get("amplify") or {})
            shapes = {t["name"]: t["shape"] for t in doc.get("inputs", []) + doc.get("outputs", [])}
            if "images" in shapes:
                meta.setdefault("image_size", shapes["images"][2:4])
                meta.setdefault("num_views", shapes["images"][1])
            if "actions" in shapes:
                meta.setdefault("action_horizon", shapes["actions"][1])
                meta.setdefault("action_dim", shapes["actions"][2])
            if "proprio" in shapes:
                meta.setdefault("proprio_dim", shapes["proprio"][1])
            if "text_emb" in shapes:
                meta.setdefault("text_embedding_dim", shapes["text_emb"][1])
            if "velocities" in shapes:
                _, v, t, n, _ = shapes["velocities"]
                meta.setdefault("num_views", v)
                meta.setdefault("track_horizon", t + 1)
                meta.setdefault("num_tracks", n)
            if "codes" in shapes:
                meta.setdefault("code_length", shapes["codes"][1])
                meta.setdefault("hidden_dim", shapes["codes"][2])
        if not meta:
            raise AmplifyError(f"{self.base_url} serves neither amplify_act nor amplify_encode", code="not_found")
        meta.setdefault("instructions", list(self._table.index) if self._table else [])
        return self._after_metadata(meta)

    def health(self) -> bool:
        try:
            return self._http.get("/v2/health/live").status_code == 200
        except httpx.HTTPError:
            return False

    def ready(self) -> bool:
        try:
            return self._http.get("/v2/health/ready").status_code == 200
        except httpx.HTTPError:
            return False

    # -- helpers -------------------------------------------------------------------------------
    def _images(self, images: ImagesLike) -> tuple[np.ndarray, bool]:
        if isinstance(images, Mapping):
            views = self.metadata().get("views") or list(images)
            arr = np.stack([np.asarray(images[v]) for v in views], axis=-4)
        else:
            arr = np.asarray(images)
        if arr.ndim not in (4, 5) or arr.shape[-1] != 3:
            raise ValueError(f"images: expected (v, H, W, 3) or (b, v, H, W, 3), got shape {arr.shape}")
        single = arr.ndim == 4
        arr = arr[None] if single else arr
        if arr.dtype == np.uint8 and not self.is_amplify_serve:  # the export's graphs take FP32 in [0, 1]
            arr = arr.astype(np.float32) / np.float32(255.0)
        elif arr.dtype != np.uint8:
            arr = arr.astype(np.float32)
        return arr, single

    @staticmethod
    def _batched(x: Any, name: str, single: bool, item_ndim: int, dtype: Any = np.float32) -> np.ndarray:
        arr = np.asarray(x, dtype=dtype)
        want = item_ndim + (0 if single else 1)
        if arr.ndim != want:
            raise ValueError(f"{name}: expected {want} dims, got shape {arr.shape}")
        return arr[None] if single else arr

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """Instructions -> (b, E): the export's table, else ``amplify serve``'s ``amplify_text_embed``."""
        if self._table is not None:
            emb = self._table(texts)
            if emb is not None:
                return emb
        if self.is_amplify_serve:
            return self.infer("amplify_text_embed", {"text": list(texts)})["text_emb"]
        raise ValueError("text: this v2 server cannot embed instructions; pass text_emb, or export_dir= the "
                         "export's directory (its instructions.json and text_embeddings.npy)")

    def _text(self, text: str | Sequence[str] | None, text_emb: Any, single: bool, batch: int) -> np.ndarray:
        if (text is None) == (text_emb is None):
            raise ValueError("give exactly one of text (instruction strings) or text_emb (embeddings)")
        if text_emb is not None:
            return self._batched(text_emb, "text_emb", single, 1)
        texts = [text] * batch if isinstance(text, str) else list(text)
        return self.text_embeddings(texts)

    @staticmethod
    def _strip(out: dict[str, np.ndarray], single: bool) -> dict[str, np.ndarray]:
        return {k: (v[0] if single else v) for k, v in out.items()}

    @staticmethod
    def _sampling(sampling: str, seed: int | None) -> dict[str, Any] | None:
        if sampling == "argmax" and seed is None:
            return None
        return {"sampling": sampling, **({"seed": int(seed)} if seed is not None else {})}

    # -- inference ---------------------------------------------------------------------------
    def act(self, images: ImagesLike, proprio: Any, text: str | Sequence[str] | None = None, *,
            text_emb: Any = None, sampling: str = "argmax", seed: int | None = None) -> np.ndarray:
        """Images + proprio (P,)/(b,P) + instruction -> actions (A, action_dim) / (b, A, action_dim)."""
        imgs, single = self._images(images)
        x = {"images": imgs, "text_emb": self._text(text, text_emb, single, len(imgs)),
             "proprio": self._batched(proprio, "proprio", single, 1)}
        out = self.infer("amplify_act", x, ["actions"], self._sampling(sampling, seed))
        return self._strip(out, single)["actions"]

    def predict_codes(self, images: ImagesLike, text: str | Sequence[str] | None = None, *, text_emb: Any = None,
                      sampling: str = "argmax", seed: int | None = None,
                      return_codes: bool = False) -> dict[str, np.ndarray]:
        """Images + instruction -> ``{"indices": (b,S)[, "codes"]}``."""
        imgs, single = self._images(images)
        x = {"images": imgs, "text_emb": self._text(text, text_emb, single, len(imgs))}
        out = self.infer("amplify_predict_codes", x, ["indices"] + (["codes"] if return_codes else []),
                         self._sampling(sampling, seed))
        return self._strip(out, single)

    def encode(self, tracks: Any = None, *, velocities: Any = None, return_codes: bool = False) -> dict[str, np.ndarray]:
        """Tracks (v,H,n,2)/(b,v,H,n,2) or velocities -> ``{"indices": (b,S)[, "codes"]}``."""
        if (tracks is None) == (velocities is None):
            raise ValueError("give exactly one of tracks (v,H,n,2) or velocities (v,t,n,2), batched or not")
        vel = np.diff(np.asarray(tracks, np.float32), axis=-3) if tracks is not None else np.asarray(velocities, np.float32)
        if vel.ndim not in (4, 5):
            raise ValueError(f"expected (v, H, n, 2) or (b, v, H, n, 2) tracks, got shape {vel.shape}")
        single = vel.ndim == 4
        out = self.infer("amplify_encode", {"velocities": vel[None] if single else vel},
                         ["indices"] + (["codes"] if return_codes else []))
        return self._strip(out, single)

    def decode(self, indices: Any = None, *, codes: Any = None, init_points: Any = None,
               return_logits: bool = False) -> dict[str, np.ndarray]:
        """Indices (S,)/(b,S) or codes -> ``{"velocities", ["tracks" with init_points], ["logits"]}``."""
        if (indices is None) == (codes is None):
            raise ValueError("give exactly one of indices (S,) / (b,S) or codes (S,h) / (b,S,h)")
        if indices is not None:
            idx = np.asarray(indices)
            if idx.dtype.kind not in "iu":
                raise ValueError(f"indices: expected integers, got dtype {idx.dtype}")
            single = idx.ndim == 1
            c = self.infer("amplify_indices_to_codes", {"indices": (idx[None] if single else idx).astype(np.int64)},
                           ["codes"])["codes"]
        else:
            c = np.asarray(codes, np.float32)
            single = c.ndim == 2
            c = c[None] if single else c
        out = self.infer("amplify_decode", {"codes": c}, ["velocities"] + (["logits"] if return_logits else []))
        if init_points is not None:
            init = self._batched(init_points, "init_points", single, 3)
            out["tracks"] = integrate(out["velocities"], init)
        return self._strip(out, single)

    def predict_traj(self, images: ImagesLike, init_points: Any, text: str | Sequence[str] | None = None, *,
                     text_emb: Any = None, sampling: str = "argmax", seed: int | None = None) -> np.ndarray:
        """Images + initial points (v,n,2)/(b,v,n,2) + instruction -> tracks (b,v,H,n,2)."""
        codes = self.predict_codes(images, text, text_emb=text_emb, sampling=sampling, seed=seed, return_codes=True)
        return self.decode(codes=codes["codes"], init_points=init_points)["tracks"]


def integrate(velocities: np.ndarray, init_points: np.ndarray) -> np.ndarray:
    """Velocities (b, v, t, n, 2) + first points (b, v, n, 2) -> tracks (b, v, t+1, n, 2), as the service does."""
    zeros = np.zeros_like(velocities[:, :, :1])
    pts = np.cumsum(np.concatenate([zeros, velocities], axis=2), axis=2)
    return (pts + init_points[:, :, None].astype(pts.dtype)).astype(np.float32)


class AsyncV2Client:
    """The asyncio face of :class:`V2Client` (its calls run on worker threads; httpx's pool is thread-safe)."""

    protocol = "v2"

    def __init__(self, base_url: str = "http://127.0.0.1:8000", **kwargs: Any):
        kwargs.pop("format", None)
        self._kwargs = kwargs
        self.base_url = base_url
        self.sync: V2Client | None = None

    async def __aenter__(self) -> "AsyncV2Client":
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def connect(self) -> dict[str, Any]:
        self.sync = await asyncio.to_thread(V2Client, self.base_url, **self._kwargs)
        return self.sync.metadata()

    async def aclose(self) -> None:
        if self.sync is not None:
            self.sync.close()

    async def metadata(self, refresh: bool = False) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.metadata, refresh)

    async def encode(self, tracks: Any = None, *, velocities: Any = None, return_codes: bool = False):
        return await asyncio.to_thread(self.sync.encode, tracks, velocities=velocities, return_codes=return_codes)

    async def decode(self, indices: Any = None, **kwargs: Any):
        return await asyncio.to_thread(lambda: self.sync.decode(indices, **kwargs))

    async def predict_codes(self, images: ImagesLike, text: Any = None, **kwargs: Any):
        return await asyncio.to_thread(lambda: self.sync.predict_codes(images, text, **kwargs))

    async def predict_traj(self, images: ImagesLike, init_points: Any, text: Any = None, **kwargs: Any):
        return await asyncio.to_thread(lambda: self.sync.predict_traj(images, init_points, text, **kwargs))

    async def act(self, images: ImagesLike, proprio: Any, text: Any = None, **kwargs: Any):
        return await asyncio.to_thread(lambda: self.sync.act(images, proprio, text, **kwargs))
