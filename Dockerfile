# miscause inference server for GPU hosts: the Open Inference Protocol over gRPC on 8001 and HTTP/REST on 8000,
# Prometheus metrics on 8002.
#
#   docker build -t miscause-server .
#   docker run --gpus all -p 8000:8000 -p 8001:8001 -p 8002:8002 -v "$PWD/models:/models:ro" miscause-server
#
# A plain Debian base with Python; every CUDA library comes once, from the CUDA wheels torch pins, which
# ONNX Runtime's CUDA build (built for the same CUDA major version) loads too. The GPU driver (libcuda) comes
# from the host through the NVIDIA Container Toolkit. Only the runtime set of requirements.lock is installed.
# The model repository is a volume at /models (the repository's embedded models/ until one is mounted).
# Arguments after the image name replace the default flags of `miscause serve`. See docs/deploy.md.

ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE}
ARG ONNXRUNTIME_GPU=1.31.1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Python 3.11 from the distribution. Triton builds its small launcher modules at first use: that needs a C
# compiler and Python's headers. The distribution pins the versions; they follow its security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc libc6-dev \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 miscause \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin miscause
# The runtime set, with ONNX Runtime's CUDA build in place of the CPU one (they cannot be installed together).
# The optional build secret `pip-ca` is a PEM bundle of the certificate authorities pip should trust (for a
# network that inspects TLS); it is mounted for this step only and never stored in the image.
COPY requirements.lock /opt/miscause/requirements.lock
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && python3 -m venv /opt/venv \
    && sed "s/^onnxruntime==.*/onnxruntime-gpu==${ONNXRUNTIME_GPU}/" /opt/miscause/requirements.lock \
        > /opt/miscause/requirements-image.lock \
    && /opt/venv/bin/pip install --no-cache-dir -r /opt/miscause/requirements-image.lock
# The package itself, built from the sources mounted for this step (setuptools is in the runtime set).
RUN --mount=type=bind,target=/src,rw \
    /opt/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation /src
COPY models /models
ENV PATH=/opt/venv/bin:$PATH \
    MISCAUSE_MODEL_REPOSITORY=/models \
    PYTHONUNBUFFERED=1 \
    TRITON_CACHE_DIR=/home/miscause/.triton
USER 10001:10001
WORKDIR /home/miscause
VOLUME ["/models"]
EXPOSE 8000 8001 8002
# Loading and warming up the models takes a while on first start; the health service answers once ready.
HEALTHCHECK --interval=15s --timeout=6s --start-period=180s --retries=3 \
    CMD ["python", "-m", "miscause.server.healthcheck", "--port", "8001"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["miscause", "serve"]
CMD ["--grpc-port", "8001", "--http-port", "8000", "--metrics-port", "8002", "--drain-seconds", "25"]
