"""Typed service settings: flags of ``amplify serve``, ``AMPLIFY_*`` environment variables, defaults.

Precedence: command-line flags and ``key=value`` overrides > environment > defaults.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Everything ``amplify serve`` can be told; each field is also ``AMPLIFY_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="AMPLIFY_", extra="forbid", validate_assignment=True)

    model: str | None = Field(None, description="bundle (amplify.pt or project directory) or `amplify export` "
                              "directory; default: $AMPLIFY_HOME/default, else an untrained small bundle")
    backend: Literal["torch", "torchscript", "onnx"] = Field("torch", description="inference back end")
    device: str = Field("cpu", description="cpu, cuda or cuda:N")
    precision: Literal["fp32", "bf16", "bf16-all"] = Field(
        "fp32", description="compute precision of the torch back end: fp32; bf16 (opt-in: FD and ID in bfloat16, "
        "vision encoder float32; faster at large batches on CPUs with AMX/AVX512-BF16 and on GPUs); bf16-all "
        "(the vision encoder in bfloat16 too: faster still, moves a trained model's image tokens more)")
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on")
    max_batch_size: int = Field(16, ge=1, le=4096, description="most samples gathered into one model call")
    max_wait_ms: float = Field(5.0, ge=0, le=10_000, description="how long a batch waits for more requests")
    queue_size: int = Field(256, ge=1, description="requests waiting for the model before 503")
    request_timeout_s: float = Field(30.0, gt=0, description="a request's deadline, queueing included (504 past it)")
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1, description="largest request body (413 past it)")
    max_request_batch: int = Field(256, ge=1, description="largest batch b one request may send")
    ws_max_connections: int = Field(64, ge=1, description="open WebSocket (openpi) connections; one more is closed with 1013")
    ws_idle_timeout_s: float = Field(600.0, gt=0, description="a WebSocket connection with no frame for this long is closed")
    api_key: SecretStr | None = Field(None, description="when set, required as `Authorization: Bearer`, `Api-Key` or `X-API-Key`")
    text_encoder: Path | None = Field(None, description="local sentence-transformers model directory for `text` "
                                      "outside the bundle's instruction table")
    threads: int | None = Field(None, ge=1, description="torch / onnxruntime intra-op threads")
    warmup: bool = Field(True, description="run every endpoint once before /ready turns 200")
    log_format: Literal["json", "text"] = Field("json", description="access and service log format")
    log_level: str = Field("info", description="logging level")
    untrained_seed: int = Field(0, description="seed of the untrained bundle made when no model exists")

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_alias(cls, v: object) -> object:
        """Accept float32 / bfloat16 / bf16_all for fp32 / bf16 / bf16-all."""
        aliases = {"float32": "fp32", "bfloat16": "bf16", "bf16_all": "bf16-all", "bfloat16-all": "bf16-all"}
        return aliases.get(str(v).strip().lower(), v) if isinstance(v, str) else v
