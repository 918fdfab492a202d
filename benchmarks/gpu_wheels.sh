#!/usr/bin/env bash
# Wheels the GPU device machine lacks for `python -m benchmarks.gpu` (its Python 3.12 image has torch,
# numpy, onnx, onnxruntime, httpx, msgpack, uvloop, h11, anyio, ... but not the service's web stack or
# the tokenizer's quantizer library), downloaded here into .whl/ (ignored by git) for `carry`.
# The versions are the ones this project is tested with. Usage, from the repository root:
#   bash benchmarks/gpu_wheels.sh && du -sh .whl
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
    vector-quantize-pytorch==1.20.11 einx==0.4.3 frozendict==2.5.1 \
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    pydantic-settings==2.16.3 python-dotenv==1.2.4 \
    fastapi==0.165.0 starlette==1.10.0 opentelemetry-api==1.45.2 fastapi-offline==1.7.7 \
    uvicorn==0.55.0 websockets==17.4
ls .whl
