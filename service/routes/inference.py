"""The model endpoints: /encode, /decode, /predict_codes, /predict_traj, /act.

Each route: readiness -> decode the body and validate it against the loaded model's shapes (on a
worker thread: JSON parsing and array conversion are CPU work) -> the engine (batched, on the
model's thread) -> encode the response in the requested encoding.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from amplify.inputs import InputError, integrate_velocities
from service import validation as V
from service.deps import service_state
from service.engine import InferenceEngine
from service.routes.common import ERRORS, one_of, read_request, request_body, respond
from service.schemas import (
    ActRequest, ActResponse, DecodeRequest, DecodeResponse, EncodeRequest, EncodeResponse, PredictCodesRequest,
    PredictCodesResponse, PredictTrajRequest, PredictTrajResponse,
)

router = APIRouter(tags=["inference"])


def _route(path: str, request_model, response_model, summary: str):
    return router.post(path, response_model=response_model, summary=summary, responses=ERRORS,
                       openapi_extra=request_body(request_model))


class _Checks:
    """Validation of one request against the loaded model (runs off the event loop)."""

    def __init__(self, engine: InferenceEngine, max_request_batch: int):
        self.engine, self.info, self.max_batch = engine, engine.info, max_request_batch

    def limit(self, batch: int, field: str) -> None:
        if batch > self.max_batch:
            raise InputError(f"{field} has batch {batch}; one request may carry at most {self.max_batch} samples "
                             "(split it, or raise max_request_batch)", field)

    def images(self, value: Any) -> np.ndarray:
        images = V.image_array(value, self.info)
        self.limit(len(images), "images")
        return images

    def points(self, value: Any, field: str) -> np.ndarray:
        i = self.info
        return V.float_array(value, field, ("b", i.num_views, i.num_tracks, 2), "(b, v, n, 2)", bound=1.0)

    def text_emb(self, req: PredictCodesRequest | ActRequest, batch: int) -> np.ndarray:
        if one_of(req, "text_emb", "text") == "text_emb":
            emb = V.float_array(req.text_emb, "text_emb", ("b", self.info.text_embedding_dim), "(b, E)")
            if len(emb) != batch:
                raise InputError(f"text_emb has batch {len(emb)} but images has batch {batch}", "text_emb")
            return emb
        if len(req.text) != batch:
            raise InputError(f"text has {len(req.text)} instructions but images has batch {batch}", "text")
        return self.engine.embed(req.text)


async def _prepare(request: Request, model: type, build: Callable[[_Checks, Any], dict[str, Any]]):
    """-> (engine, request model, response encoding, validated inputs)."""
    state = service_state(request)
    engine = state.ready_engine()
    with engine.arriving():  # a forming batch waits for this request while it is read and validated
        req, enc = await read_request(request, model)
        checks = _Checks(engine, state.settings.max_request_batch)
        inputs = await run_in_threadpool(build, checks, req)
    return engine, req, enc, inputs


def _encode_inputs(c: _Checks, req: EncodeRequest) -> dict[str, Any]:
    i = c.info
    if one_of(req, "tracks", "velocities") == "tracks":
        tracks = V.float_array(req.tracks, "tracks", ("b", i.num_views, i.track_horizon, i.num_tracks, 2),
                               "(b, v, H, n, 2)", bound=1.0)
        c.limit(len(tracks), "tracks")
        return {"velocities": np.diff(tracks, axis=2)}
    velocities = V.float_array(req.velocities, "velocities", ("b", i.num_views, i.num_steps, i.num_tracks, 2),
                               "(b, v, t, n, 2)", bound=2.0)
    c.limit(len(velocities), "velocities")
    return {"velocities": velocities}


@_route("/encode", EncodeRequest, EncodeResponse, "Tracks or velocities -> code indices (motion tokenizer)")
async def encode(request: Request) -> Response:
    engine, req, enc, x = await _prepare(request, EncodeRequest, _encode_inputs)
    out, timing = await engine.encode(x["velocities"])
    payload = {"indices": out["indices"]}
    if req.return_codes:
        payload["codes"] = out["codes"]
    return await respond(request, payload, enc, timing)


def _decode_inputs(c: _Checks, req: DecodeRequest) -> dict[str, Any]:
    i = c.info
    init = None if req.init_points is None else c.points(req.init_points, "init_points")
    if one_of(req, "indices", "codes") == "indices":
        x = {"indices": V.index_array(req.indices, "indices", ("b", i.code_length), "(b, S)", i.codebook_size)}
    else:
        x = {"codes": V.float_array(req.codes, "codes", ("b", i.code_length, i.hidden_dim), "(b, S, h)")}
    name, arr = next(iter(x.items()))
    V.same_batch({name: arr, "init_points": init})
    c.limit(len(arr), name)
    return {**x, "init_points": init}


@_route("/decode", DecodeRequest, DecodeResponse, "Code indices or codes -> velocities, tracks (motion tokenizer)")
async def decode(request: Request) -> Response:
    engine, req, enc, x = await _prepare(request, DecodeRequest, _decode_inputs)
    out, timing = await engine.decode(codes=x.get("codes"), indices=x.get("indices"), return_logits=bool(req.return_logits))
    payload = {"velocities": out["velocities"]}
    if x["init_points"] is not None:
        payload["tracks"] = integrate_velocities(out["velocities"], x["init_points"])
    if req.return_logits:
        payload["logits"] = out["logits"]
    return await respond(request, payload, enc, timing)


def _predict_inputs(c: _Checks, req: PredictCodesRequest) -> dict[str, Any]:
    images = c.images(req.images)
    x = {"images": images}
    if isinstance(req, PredictTrajRequest):
        x["init_points"] = c.points(req.init_points, "init_points")
        V.same_batch({"images": images, "init_points": x["init_points"]})
    x["text_emb"] = c.text_emb(req, len(images))
    return x


@_route("/predict_codes", PredictCodesRequest, PredictCodesResponse, "Images + instruction -> code indices (forward dynamics)")
async def predict_codes(request: Request) -> Response:
    engine, req, enc, x = await _prepare(request, PredictCodesRequest, _predict_inputs)
    out, timing = await engine.predict_codes(x["images"], x["text_emb"], req.sampling, req.seed)
    payload = {"indices": out["indices"]}
    if req.return_codes:
        payload["codes"] = out["codes"]
    return await respond(request, payload, enc, timing)


@_route("/predict_traj", PredictTrajRequest, PredictTrajResponse, "Images + instruction + first points -> tracks")
async def predict_traj(request: Request) -> Response:
    engine, req, enc, x = await _prepare(request, PredictTrajRequest, _predict_inputs)
    out, timing = await engine.predict_traj(x["images"], x["text_emb"], x["init_points"], req.sampling, req.seed)
    return await respond(request, {"tracks": out["tracks"]}, enc, timing)


def _act_inputs(c: _Checks, req: ActRequest) -> dict[str, Any]:
    images = c.images(req.images)
    proprio = V.float_array(req.proprio, "proprio", ("b", c.info.proprio_dim), "(b, proprio_dim)")
    V.same_batch({"images": images, "proprio": proprio})
    return {"images": images, "proprio": proprio, "text_emb": c.text_emb(req, len(images))}


@_route("/act", ActRequest, ActResponse, "Images + proprioception + instruction -> actions (the policy)")
async def act(request: Request) -> Response:
    engine, req, enc, x = await _prepare(request, ActRequest, _act_inputs)
    out, timing = await engine.act(x["images"], x["proprio"], x["text_emb"], req.sampling, req.seed)
    return await respond(request, {"actions": out["actions"]}, enc, timing)
