"""The ``precision`` setting: fp32 by default, opt-in bf16 and bf16-all on the torch back end, reported by /metadata;
clear errors for a precision or device a back end cannot serve."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from service.cli import add_arguments, build_settings
from service.settings import ServiceSettings
from tests.service.live import live_server, post, result


def test_precision_setting_flag_env_and_aliases(monkeypatch):
    assert ServiceSettings().precision == "fp32"
    assert ServiceSettings(precision="bfloat16").precision == "bf16"
    assert ServiceSettings(precision="BF16_all").precision == "bf16-all"
    monkeypatch.setenv("AMPLIFY_PRECISION", "bf16")
    assert ServiceSettings().precision == "bf16"
    with pytest.raises(ValidationError, match="precision"):
        ServiceSettings(precision="int8")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert build_settings(parser.parse_args(["--precision", "fp32"])).precision == "fp32"  # the flag beats the env
    assert build_settings(parser.parse_args(["precision=float32"])).precision == "fp32"
    assert build_settings(parser.parse_args(["--precision", "bf16-all"])).precision == "bf16-all"


def test_exported_back_ends_refuse_bf16_and_devices_are_checked(tmp_path):
    from service.backends import load_backend

    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(ValueError, match="torch back end"):
        load_backend("onnx", str(tmp_path), precision="bf16")
    with pytest.raises(ValueError, match="fp32 .* bf16|fp32 \\(float32\\) or bf16"):
        load_backend("torch", None, precision="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cpu"):
            load_backend("torch", None, device="cuda")


def test_bf16_server_reports_its_precision_and_acts(random_bundle_dir, random_server):
    assert random_server.client.get("/metadata").json()["precision"] == "fp32"
    rng = np.random.default_rng(0)
    fields = {"images": rng.integers(0, 256, (2, 2, 128, 128, 3), dtype=np.uint8),
              "proprio": rng.normal(0, 0.3, (2, 9)).astype(np.float32),
              "text": ["put the bowl on the plate", "open the top drawer"]}
    fp32 = result(post(random_server.client, "/act", fields, "msgpack"))["actions"]
    for precision in ("bf16", "bf16-all"):
        with live_server(model=str(random_bundle_dir), precision=precision, max_wait_ms=1) as server:
            meta = server.client.get("/metadata").json()
            assert meta["precision"] == precision and meta["backend"] == "torch"
            bf16 = result(post(server.client, "/act", fields, "msgpack"))["actions"]
        assert bf16.dtype == np.float32 and bf16.shape == fp32.shape
        assert np.abs(bf16 - fp32).max() < 0.2
