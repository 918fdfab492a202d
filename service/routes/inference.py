"""The model endpoints: /encode, /decode, /predict_codes, /predict_traj, /act.

Each route: readiness -> decode and validate the body against the loaded model's shapes ->
the engine (batched, off the event loop) -> encode the response in the requested encoding.
"""
from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request, Response

from service import validation as V
from service.engine import InferenceEngine
from service.errors import InputError
from service.routes.common import ERRORS, one_of, read_request, request_body, respond, service_state
from service.schemas import (
    ActRequest, ActResponse, DecodeRequest, DecodeResponse, EncodeRequest, EncodeResponse, PredictCodesRequest,
    PredictCodesResponse, PredictTrajRequest, PredictTrajResponse,
)

router = APIRouter(tags=["inference"])


def _route(path: str, request_model, response_model, summary: str):
    return router.post(path, response_model=response_model, summary=summary, responses=ERRORS,
                       openapi_extra=request_body(request_model))


def _text_emb(engine: InferenceEngine, req: PredictCodesRequest | ActRequest, batch: int) -> np.ndarray:
    info = engine.info
    field = one_of(req, "text_emb", "text")
    if field == "text_emb":
        emb = V.float_array(req.text_emb, "text_emb", ("b", info.text_embedding_dim), "(b, E)")
        if len(emb) != batch:
            raise InputError(f"text_emb has batch {len(emb)} but images has batch {batch}", "text_emb")
        return emb
    if len(req.text) != batch:
        raise InputError(f"text has {len(req.text)} instructions but images has batch {batch}", "text")
    return engine.embed(req.text)


def _images(engine: InferenceEngine, value) -> np.ndarray:
    return V.image_array(value, engine.info)


def _points(engine: InferenceEngine, value, field: str) -> np.ndarray:
    i = engine.info
    return V.float_array(value, field, ("b", i.num_views, i.num_tracks, 2), "(b, v, n, 2)", bound=1.0)


@_route("/encode", EncodeRequest, EncodeResponse, "Tracks or velocities -> code indices (motion tokenizer)")
async def encode(request: Request) -> Response:
    engine = service_state(request).ready_engine()
    req, enc = await read_request(request, EncodeRequest)
    i = engine.info
    if one_of(req, "tracks", "velocities") == "tracks":
        tracks = V.float_array(req.tracks, "tracks", ("b", i.num_views, i.track_horizon, i.num_tracks, 2),
                               "(b, v, H, n, 2)", bound=1.0)
        velocities = np.diff(tracks, axis=2)
    else:
        velocities = V.float_array(req.velocities, "velocities", ("b", i.num_views, i.num_steps, i.num_tracks, 2),
                                   "(b, v, t, n, 2)", bound=2.0)
    out, timing = await engine.encode(velocities)
    payload = {"indices": out["indices"]}
    if req.return_codes:
        payload["codes"] = out["codes"]
    return respond(request, payload, enc, timing)


@_route("/decode", DecodeRequest, DecodeResponse, "Code indices or codes -> velocities, tracks (motion tokenizer)")
async def decode(request: Request) -> Response:
    engine = service_state(request).ready_engine()
    req, enc = await read_request(request, DecodeRequest)
    i = engine.info
    if one_of(req, "indices", "codes") == "indices":
        indices = V.index_array(req.indices, "indices", ("b", i.code_length), "(b, S)", i.codebook_size)
        init = None if req.init_points is None else _points(engine, req.init_points, "init_points")
        V.same_batch({"indices": indices, "init_points": init})
        out, timing = await engine.decode(indices=indices)
    else:
        codes = V.float_array(req.codes, "codes", ("b", i.code_length, i.hidden_dim), "(b, S, h)")
        init = None if req.init_points is None else _points(engine, req.init_points, "init_points")
        V.same_batch({"codes": codes, "init_points": init})
        out, timing = await engine.decode(codes=codes)
    payload = {"velocities": out["velocities"]}
    if init is not None:
        from service.backends.base import integrate_velocities
        payload["tracks"] = integrate_velocities(out["velocities"], init)
    if req.return_logits:
        payload["logits"] = out["logits"]
    return respond(request, payload, enc, timing)


@_route("/predict_codes", PredictCodesRequest, PredictCodesResponse, "Images + instruction -> code indices (forward dynamics)")
async def predict_codes(request: Request) -> Response:
    engine = service_state(request).ready_engine()
    req, enc = await read_request(request, PredictCodesRequest)
    images = _images(engine, req.images)
    text_emb = _text_emb(engine, req, len(images))
    out, timing = await engine.predict_codes(images, text_emb, req.sampling, req.seed)
    payload = {"indices": out["indices"]}
    if req.return_codes:
        payload["codes"] = out["codes"]
    return respond(request, payload, enc, timing)


@_route("/predict_traj", PredictTrajRequest, PredictTrajResponse, "Images + instruction + first points -> tracks")
async def predict_traj(request: Request) -> Response:
    engine = service_state(request).ready_engine()
    req, enc = await read_request(request, PredictTrajRequest)
    images = _images(engine, req.images)
    init = _points(engine, req.init_points, "init_points")
    V.same_batch({"images": images, "init_points": init})
    text_emb = _text_emb(engine, req, len(images))
    out, timing = await engine.predict_traj(images, text_emb, init, req.sampling, req.seed)
    return respond(request, {"tracks": out["tracks"]}, enc, timing)


@_route("/act", ActRequest, ActResponse, "Images + proprioception + instruction -> actions (the policy)")
async def act(request: Request) -> Response:
    engine = service_state(request).ready_engine()
    req, enc = await read_request(request, ActRequest)
    i = engine.info
    images = _images(engine, req.images)
    proprio = V.float_array(req.proprio, "proprio", ("b", i.proprio_dim), "(b, proprio_dim)")
    V.same_batch({"images": images, "proprio": proprio})
    text_emb = _text_emb(engine, req, len(images))
    out, timing = await engine.act(images, proprio, text_emb, req.sampling, req.seed)
    return respond(request, {"actions": out["actions"]}, enc, timing)
