# miscause inference server for GPU hosts: gRPC (Open Inference Protocol) on 8001, Prometheus metrics on 8002.
#
#   docker build -t miscause-server .
#   docker run --gpus all -p 8001:8001 -p 8002:8002 -v "$PWD/models:/models:ro" miscause-server
#
# The model repository is a volume at /models (the repository's embedded models/ until one is mounted).
# Arguments after the image name replace the default flags of `miscause serve`. See docs/deploy.md.

ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
ARG ONNXRUNTIME_GPU=1.32.0

FROM ${CUDA_IMAGE} AS build
ARG ONNXRUNTIME_GPU
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The CUDA base pins the distribution; its Python packages follow the distribution's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements.lock ./
# The pinned set, with ONNX Runtime's CUDA build in place of the CPU one (they cannot be installed together).
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -r requirements.lock \
    && /opt/venv/bin/pip uninstall -y onnxruntime \
    && /opt/venv/bin/pip install --no-cache-dir "onnxruntime-gpu==${ONNXRUNTIME_GPU}"
COPY pyproject.toml README.md ./
COPY miscause miscause
COPY kernels kernels
COPY jobs jobs
COPY server server
COPY client client
COPY benchmarks benchmarks
COPY proto proto
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps .

FROM ${CUDA_IMAGE}
# Triton builds its small launcher modules at first use: that needs a C compiler and Python's headers.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-dev gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 miscause \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin miscause
COPY --from=build /opt/venv /opt/venv
COPY --chown=10001:10001 models /models
ENV PATH=/opt/venv/bin:$PATH \
    MISCAUSE_MODEL_REPOSITORY=/models \
    PYTHONUNBUFFERED=1 \
    TRITON_CACHE_DIR=/home/miscause/.triton
USER 10001:10001
WORKDIR /home/miscause
VOLUME ["/models"]
EXPOSE 8001 8002
# Loading and warming up the models takes a while on first start; the health service answers once ready.
HEALTHCHECK --interval=15s --timeout=6s --start-period=180s --retries=3 \
    CMD ["python", "-m", "miscause.server.healthcheck", "--port", "8001"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["miscause", "serve"]
CMD ["--grpc-port", "8001", "--metrics-port", "8002", "--drain-seconds", "25"]
