#!/usr/bin/env bash
# The docker compose stack without Docker, on this machine: N replicas of `amplify serve` (the
# images' command and AMPLIFY_* settings) on 127.0.0.1 ports behind nginx running
# docker/nginx/nginx.conf (only its upstream servers and listen port rendered for those ports).
# A client load then runs through the balancer and replica 0 is SIGKILLed part way; the summary
# (JSON) counts failed requests (expected: 0) and the ones nginx retried on another replica.
#
#   docker/local_stack.sh                                   # 2 replicas, default model, 200 requests
#   docker/local_stack.sh --model models/default --replicas 3 --requests 500
#   docker/local_stack.sh --no-kill --serve                 # keep it up: curl the printed balancer URL
#   docker/local_stack.sh --model models/default --tokenize data/tracks tokens.h5   # the batch client
#   docker/local_stack.sh --bench                           # same load: one replica direct vs the balancer
#   docker/local_stack.sh AMPLIFY_MAX_BATCH_SIZE=8          # any service setting, as compose passes it
#
# Needs nginx (Debian/Ubuntu: apt-get install -y nginx; any nginx >= 1.18 works here) and the
# project installed in the active Python (pip install -e ".[dev]"). Exit status 1 if a request failed.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null 2>&1; then
    echo "local_stack.sh: nginx not found (Debian/Ubuntu: apt-get install -y nginx)" >&2
    exit 2
fi
PYTHON="${PYTHON:-python3}"
[ -n "${VIRTUAL_ENV:-}" ] && PYTHON="$VIRTUAL_ENV/bin/python"
exec "$PYTHON" docker/local_stack.py "$@"
