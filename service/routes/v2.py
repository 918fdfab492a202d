"""KServe v2 / Open Inference Protocol routes (the Triton HTTP API): server and model metadata,
health and readiness, and ``POST /v2/models/{model}[/versions/1]/infer`` with JSON or binary tensors.

Same engine, batcher, limits, API key and metrics as the other endpoints; errors are
``{"error": "<message>"}`` with the status of the equivalent ``/act`` error (400, 401, 404, 413, 503,
504). ``tritonclient`` sends no ``Content-Type``: the body is read whatever it says.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

import amplify
from service import validation as V
from service.engine import InferenceEngine
from service.errors import InputError, ServiceError
from service.protocols import v2 as P
from service.deps import ServiceState, State
from service.routes.common import OFF_LOOP_BYTES, record_timing
from service.routes.ops import metadata_object

router = APIRouter(prefix="/v2", tags=["kserve-v2"])
# Path parameters name an entry of a fixed table (documented as a closed set; never a file).
MODEL = Path(description="a model of the table (as the Triton export names them)",
             json_schema_extra={"enum": list(P.MODEL_NAMES)})
VERSION = Path(description="the model's version (the export has version 1 only)", json_schema_extra={"enum": [P.VERSION]})
EXTENSIONS = ["binary_tensor_data", "model_configuration"]


def v2_error(e: ServiceError | InputError) -> JSONResponse:
    """``{"error": "<message>"}`` with the status the HTTP contract gives the same error (400 for bad input)."""
    status = getattr(e, "status", 400)
    headers = dict(getattr(e, "headers", {}) or {})
    if status == 503:
        headers.setdefault("Retry-After", "1")
    return JSONResponse({"error": e.message}, status, headers=headers)


def _model(engine: InferenceEngine, name: str, version: str | None) -> P.Model:
    table = P.models(engine.info, engine.backend.act_inputs, engine.backend.id_inputs)
    if name not in table:
        raise ServiceError(f"unknown model {name!r}; this server has {sorted(table)}", "model", status=404,
                           code="not_found")
    if version not in (None, "", P.VERSION):
        raise ServiceError(f"model {name!r} has no version {version!r}; it has [{P.VERSION!r}]", "version", status=404,
                           code="not_found")
    return table[name]


@router.get("", summary="Server metadata")
async def server_metadata() -> dict:
    return {"name": "amplify-serve", "version": amplify.__version__, "extensions": EXTENSIONS}


@router.get("/health/live", summary="200 while the process serves")
async def live() -> Response:
    return Response(status_code=200)


@router.get("/health/ready", summary="200 once the model is loaded and warm, else 503")
async def ready(state: State) -> Response:
    return Response(status_code=200 if state.status == "ready" else 503)


async def _metadata(state: ServiceState, model: str, version: str | None) -> Response:
    try:
        spec = _model(state.ready_engine(), model, version)
        # the /metadata object too, for clients that need more than the tensors (an amplify serve extension key)
        return JSONResponse(spec.metadata({"amplify": metadata_object(state)}))
    except (ServiceError, InputError) as e:
        return v2_error(e)


async def _ready(state: ServiceState, model: str, version: str | None) -> Response:
    try:
        _model(state.ready_engine(), model, version)
    except (ServiceError, InputError) as e:
        return v2_error(e)
    return Response(status_code=200)


async def _config(state: ServiceState, model: str, version: str | None) -> Response:
    try:
        return JSONResponse(_model(state.ready_engine(), model, version).config(state.settings.max_request_batch))
    except (ServiceError, InputError) as e:
        return v2_error(e)


@router.get("/models/{model}", summary="Model metadata")
async def model_metadata(state: State, model: str = MODEL) -> Response:
    return await _metadata(state, model, None)


@router.get("/models/{model}/versions/{version}", summary="Model metadata (a version)")
async def model_version_metadata(state: State, model: str = MODEL, version: str = VERSION) -> Response:
    return await _metadata(state, model, version)


@router.get("/models/{model}/ready", summary="200 when the model is ready")
async def model_ready(state: State, model: str = MODEL) -> Response:
    return await _ready(state, model, None)


@router.get("/models/{model}/versions/{version}/ready", summary="200 when the model version is ready")
async def model_version_ready(state: State, model: str = MODEL, version: str = VERSION) -> Response:
    return await _ready(state, model, version)


@router.get("/models/{model}/config", summary="Model configuration (Triton's extension)")
async def model_config(state: State, model: str = MODEL) -> Response:
    return await _config(state, model, None)


@router.get("/models/{model}/versions/{version}/config", summary="Model configuration of a version (Triton's extension)")
async def model_version_config(state: State, model: str = MODEL, version: str = VERSION) -> Response:
    return await _config(state, model, version)


# ---------------------------------------------------------------------------------------------
# inference
# ---------------------------------------------------------------------------------------------
def _check(spec: P.Model, req: P.InferRequest, engine: InferenceEngine, max_batch: int) -> dict[str, Any]:
    """The request's tensors against the model -> validated arrays, as ``/act`` and the others check them."""
    names = [t.name for t in spec.inputs]
    for name in req.inputs:
        if spec.input(name) is None:
            raise InputError(f"{spec.name} has no input {name!r}; its inputs are {names}", name)
    missing = [n for n in names if n not in req.inputs]
    if missing:
        t = spec.input(missing[0])
        raise InputError(f"{spec.name} needs input {missing[0]!r} ({t.datatype} {list(t.shape)})", missing[0])
    i, x, out = engine.info, req.inputs, {}
    for name in names:
        value = x[name]
        if name == "text":
            out[name] = value
            continue
        if name == "images":
            out[name] = V.image_array(value, i)
        elif name == "text_emb":
            out[name] = V.float_array(value, name, ("b", i.text_embedding_dim), "(b, E)")
        elif name == "proprio":
            out[name] = V.float_array(value, name, ("b", i.proprio_dim), "(b, proprio_dim)")
        elif name == "codes":
            out[name] = V.float_array(value, name, ("b", i.code_length, i.hidden_dim), "(b, S, h)")
        elif name == "indices":
            out[name] = V.index_array(value, name, ("b", i.code_length), "(b, S)", i.codebook_size)
        elif name == "velocities":
            out[name] = V.float_array(value, name, ("b", i.num_views, i.num_steps, i.num_tracks, 2), "(b, v, t, n, 2)",
                                      bound=2.0)
    batch = V.same_batch(out)
    if batch > max_batch:
        raise InputError(f"inputs have batch {batch}; one request may carry at most {max_batch} samples", names[0])
    if batch == 0:
        raise InputError(f"{names[0]} has an empty batch (b = 0)", names[0])
    if "text" in out:
        out["text_emb"] = engine.embed(out.pop("text"))
    return out


def _sampling(req: P.InferRequest) -> tuple[str, int | None]:
    sampling = req.parameters.get("sampling", "argmax")
    seed = req.parameters.get("seed")
    if sampling not in ("argmax", "topk"):
        raise InputError(f"parameters.sampling must be 'argmax' or 'topk', got {sampling!r}", "sampling")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise InputError(f"parameters.seed must be an integer in [0, 2**63), got {seed!r}", "seed")
    return sampling, seed


async def _run(engine: InferenceEngine, spec: P.Model, x: dict[str, np.ndarray], req: P.InferRequest,
               wanted: list[str]):
    name = spec.name
    if name == "amplify_act":
        sampling, seed = _sampling(req)
        proprio = x.get("proprio")
        if proprio is None:  # the model's ID does not condition on proprioception
            proprio = np.zeros((len(x["images"]), engine.info.proprio_dim), np.float32)
        return await engine.act(x["images"], proprio, x["text_emb"], sampling, seed)
    if name == "amplify_predict_codes":
        sampling, seed = _sampling(req)
        return await engine.predict_codes(x["images"], x["text_emb"], sampling, seed)
    if name == "amplify_encode":
        return await engine.encode(x["velocities"])
    if name == "amplify_decode":
        return await engine.decode(codes=x["codes"], return_logits="logits" in wanted)
    if name == "amplify_indices_to_codes":
        return await engine.indices_to_codes(x["indices"])
    if name == "amplify_inverse_dynamics":
        return await engine.inverse_dynamics(x)
    if name == "amplify_text_embed":
        return {"text_emb": x["text_emb"]}, None
    raise AssertionError(name)


@router.post("/models/{model}/infer", summary="Inference (JSON or binary tensors)")
async def infer(request: Request, state: State, model: str = MODEL) -> Response:
    return await _infer(request, state, model, None)


@router.post("/models/{model}/versions/{version}/infer", summary="Inference on a version (JSON or binary tensors)")
async def infer_version(request: Request, state: State, model: str = MODEL, version: str = VERSION) -> Response:
    return await _infer(request, state, model, version)


async def _infer(request: Request, state: ServiceState, model: str, version: str | None) -> Response:
    try:
        engine = state.ready_engine()
        spec = _model(engine, model, version)
        with engine.arriving():
            raw = await request.body()
            header_length, encoding = request.headers.get(P.HEADER_LENGTH), request.headers.get("content-encoding")

            def parse() -> tuple[P.InferRequest, dict[str, Any]]:
                body = P.decompress(raw, encoding, state.settings.max_body_bytes)
                req = P.parse_infer_request(body, header_length)
                return req, _check(spec, req, engine, state.settings.max_request_batch)
            # as /act: a small uncompressed body parses and validates on the event loop, anything else off it
            small = len(raw) <= OFF_LOOP_BYTES and not encoding
            req, x = parse() if small else await run_in_threadpool(parse)
        outputs = [t.name for t in spec.outputs]
        wanted = req.outputs if req.outputs is not None else outputs
        unknown = [o for o in wanted if o not in outputs]
        if unknown:
            raise InputError(f"{spec.name} has no output {unknown[0]!r}; its outputs are {outputs}", unknown[0])
        out, timing = await _run(engine, spec, x, req, wanted)
        if timing is not None:
            record_timing(request, timing)
        selected = [(o, out[o], req.binary.get(o, req.binary_default)) for o in wanted]
        size = sum(a.nbytes for _, a, _ in selected)
        if size > OFF_LOOP_BYTES // 4:
            content, headers = await run_in_threadpool(P.encode_infer_response, spec.name, req.id, selected)
        else:
            content, headers = P.encode_infer_response(spec.name, req.id, selected)
        return Response(content, headers=headers)
    except (ServiceError, InputError) as e:
        return v2_error(e)
