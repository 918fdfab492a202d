"""Request and response models: scalar fields are validated here; arrays are documented here and
checked against the loaded model in :mod:`service.validation`.

An array is nested lists of numbers in JSON, or in msgpack the map
``{"__ndarray__": true, "dtype": "<f4", "shape": [...], "data": <bytes>}``.
Shapes: b batch, v views, H points per track, t = H - 1, n tracks, S code tokens, h hidden size,
A action horizon, E text-embedding size (GET /metadata gives each for the loaded model).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_ARRAY_SCHEMA = {
    "anyOf": [
        {"type": "array", "items": {}, "title": "nested lists (JSON)"},
        {"type": "object", "title": "ndarray map (msgpack)",
         "properties": {"__ndarray__": {"const": True}, "dtype": {"type": "string", "example": "<f4"},
                        "shape": {"type": "array", "items": {"type": "integer"}},
                        "data": {"type": "string", "format": "binary"}},
         "required": ["__ndarray__", "dtype", "shape", "data"]},
    ]
}


def array(description: str, required: bool = True) -> Any:
    """A documented array field (nested lists in JSON, an ndarray map in msgpack)."""
    return Field(... if required else None, description=description, json_schema_extra=_ARRAY_SCHEMA)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class _Sampled(_Request):
    text_emb: Any = array("(b, E) float text embeddings; or send `text`", required=False)
    text: list[str] | None = Field(None, description="b instructions from GET /metadata `instructions` "
                                   "(or any text when a text encoder is configured); instead of `text_emb`")
    sampling: Literal["argmax", "topk"] = Field("argmax", description="how FD picks each code: argmax or top-k sampling")
    seed: int | None = Field(None, ge=0, lt=2**63, description="topk only: seeds this request's sampling (reproducible)")


class EncodeRequest(_Request):
    """Tracks or velocities -> code indices. Send exactly one of `tracks` and `velocities`."""

    tracks: Any = array("(b, v, H, n, 2) float points in [-1, 1], (row, col)", required=False)
    velocities: Any = array("(b, v, t, n, 2) float velocities (tracks' first differences), in [-2, 2]", required=False)
    return_codes: bool = Field(False, description="also return the codes (b, S, h)")


class EncodeResponse(BaseModel):
    indices: Any = array("(b, S) int64 code indices")
    codes: Any = array("(b, S, h) float32 codes; only with return_codes", required=False)


class DecodeRequest(_Request):
    """Indices or codes -> velocities (and tracks from initial points). Send exactly one of `indices` and `codes`."""

    indices: Any = array("(b, S) int32/int64 code indices in [0, codebook_size)", required=False)
    codes: Any = array("(b, S, h) float codes", required=False)
    init_points: Any = array("(b, v, n, 2) float first points in [-1, 1]; the response then holds `tracks`", required=False)
    return_logits: bool = Field(False, description="also return the relative-class logits (b, v*t*n, R)")


class DecodeResponse(BaseModel):
    velocities: Any = array("(b, v, t, n, 2) float32")
    tracks: Any = array("(b, v, H, n, 2) float32; only with init_points (not clamped to [-1, 1])", required=False)
    logits: Any = array("(b, v*t*n, R) float32; only with return_logits", required=False)


class PredictCodesRequest(_Sampled):
    """Images and an instruction -> predicted code indices (forward dynamics)."""

    images: Any = array("(b, v, H_img, W_img, 3) uint8 0-255 or float 0-1, upright, views in /metadata order")
    return_codes: bool = Field(False, description="also return the codes (b, S, h)")


class PredictCodesResponse(BaseModel):
    indices: Any = array("(b, S) int64 code indices")
    codes: Any = array("(b, S, h) float32; only with return_codes", required=False)


class PredictTrajRequest(PredictCodesRequest):
    """Images, an instruction and first points -> predicted tracks."""

    init_points: Any = array("(b, v, n, 2) float first points in [-1, 1], (row, col)")


class PredictTrajResponse(BaseModel):
    tracks: Any = array("(b, v, H, n, 2) float32 predicted tracks (not clamped to [-1, 1])")


class ActRequest(_Sampled):
    """Images, proprioception and an instruction -> a chunk of actions (the full policy)."""

    images: Any = array("(b, v, H_img, W_img, 3) uint8 0-255 or float 0-1, upright, views in /metadata order")
    proprio: Any = array("(b, proprio_dim) float proprioception")


class ActResponse(BaseModel):
    actions: Any = array("(b, A, action_dim) float32 actions")


class ModelName(BaseModel):
    name: str
    version: str
    format: str


class Batching(BaseModel):
    max_batch_size: int
    max_wait_ms: float


class Metadata(BaseModel):
    """What the loaded model takes and returns (the contract's /metadata object; more keys may follow)."""

    model_config = ConfigDict(extra="allow")

    model: ModelName
    backend: Literal["torch", "torchscript", "onnx"]
    device: str
    precision: Literal["fp32", "bf16", "bf16-all"] = Field(
        "fp32", description="compute precision (bf16: FD and ID in bfloat16; bf16-all: the vision encoder too)")
    views: list[str]
    image_size: list[int] = Field(description="[H_img, W_img] the model was trained on; other sizes are resized")
    track_horizon: int = Field(description="H, points per track")
    num_tracks: int = Field(description="n")
    code_length: int = Field(description="S")
    hidden_dim: int = Field(description="h")
    fsq_levels: list[int]
    codebook_size: int
    action_horizon: int = Field(description="A")
    action_dim: int
    proprio_dim: int
    text_embedding_dim: int = Field(description="E")
    instructions: list[str] = Field(description="instructions `text` may name without a text encoder")
    batching: Batching
    trained: bool | None = Field(description="false for the untrained bundle served when no model exists; "
                                 "null when the model does not say")
    sampling: list[str] = Field(description="sampling modes this back end implements")
    execute: int | None = Field(None, description="actions to run from each returned chunk before asking again, as "
                                "the model's recipe does (`amplify build-default` bundles: 1); absent when it does not say")
    gripper_hold: int | None = Field(None, description="steps to keep a changed gripper command (the last action "
                                     "dimension, > 0 close) whatever later chunks predict, a sticky gripper the "
                                     "robot applies (`amplify build-default` bundles: 4); absent when the model "
                                     "does not say")


class Status(BaseModel):
    status: str = Field(description="ok, loading or failed")
    detail: str | None = None


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. invalid_input, queue_full")
    message: str
    field: str | None = Field(None, description="the request field at fault, if any")
    request_id: str | None


class ErrorBody(BaseModel):
    error: ErrorDetail
