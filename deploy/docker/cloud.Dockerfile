# ddnn cloud service and its Triton: gRPC ddnn.v1.Cloud on 50052, /metrics on 9102; the same image runs
# Triton (deploy/docker/triton_serve.py: the nvidia-pytriton wheel's tritonserver, Python backend,
# gRPC 8001, HTTP 8000, metrics 8002). Built by `make images` (scripts/build_images.py; see edge.Dockerfile):
#   docker build -f deploy/docker/cloud.Dockerfile -t ddnn-cloud:0.1.0 --build-arg WHEELS_IMAGE=ddnn-wheels:current .
# The image installs exactly requirements/cloud.txt from the wheelhouse, with --no-index: no torch. The
# models are the ONNX cloud graphs of models/*.bundle, run by ONNX Runtime. For Triton on NVIDIA GPUs
# (deploy/k8s/overlays/gpu-cloud) serve them with the NGC Triton container's native onnxruntime_onnx
# backend instead: `ddnn export-triton --platform onnxruntime --kind gpu`.
ARG BASE_IMAGE=python:3.11.7-slim-bookworm
ARG WHEELS_IMAGE=ddnn-wheels:current

FROM ${WHEELS_IMAGE} AS wheels

# -- protos: generate ddnn/pb with grpcio-tools, which the runtime image does not need -------------
FROM ${BASE_IMAGE} AS protos
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INDEX=1
WORKDIR /src
COPY deploy/docker/requirements/build.txt /tmp/build.txt
COPY --from=wheels /wheels/build /wheels
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --no-index --find-links /wheels --no-deps --require-hashes -r /tmp/build.txt \
 && /opt/build/bin/pip check
COPY protos/ protos/
COPY scripts/gen_proto.py scripts/
RUN /opt/build/bin/python scripts/gen_proto.py

# -- deps: a virtualenv with exactly the pinned requirement file, from the wheelhouse ---------------
FROM ${BASE_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INDEX=1
COPY deploy/docker/requirements/cloud.txt /tmp/req/
COPY --from=wheels /wheels/cloud /wheels
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheels --no-deps --require-hashes -r /tmp/req/cloud.txt \
 && /opt/venv/bin/pip check

# -- runtime ---------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
ARG UID=10001
# numeric USER below: Kubernetes runAsNonRoot can only verify a numeric user
RUN groupadd --system --gid "${UID}" ddnn \
 && useradd --system --uid "${UID}" --gid ddnn --home-dir /tmp --no-create-home --shell /usr/sbin/nologin ddnn
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    DDNN_CACHE_DIR=/tmp/ddnn-cache \
    DDNN_CLOUD_LISTEN=0.0.0.0:50052 \
    DDNN_CLOUD_METRICS_ADDR=0.0.0.0 \
    DDNN_CLOUD_METRICS_PORT=9102 \
    DDNN_CLOUD_CHECKPOINT=/app/models/resnet20w32-cifar10.pt \
    DDNN_TRITON_SERVE_CHECKPOINT=/app/models/resnet20w32-cifar10.pt
WORKDIR /app
COPY --from=deps /opt/venv /opt/venv
COPY models/resnet20w32-cifar10.pt models/
COPY models/resnet20w32-cifar10.bundle/ models/resnet20w32-cifar10.bundle/
COPY deploy/docker/grpc_health_probe.py deploy/docker/triton_serve.py deploy/docker/
# The Triton model repository is written here (a volume shared with the cloud in docker compose).
RUN install -d -o ddnn -g ddnn /triton
# the code last: what changes most often rebuilds the fewest layers
COPY ddnn/ ddnn/
COPY --from=protos /src/ddnn/pb/ ddnn/pb/
COPY services/ services/
USER 10001:10001
EXPOSE 50052 9102 8000 8001 8002
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/app/deploy/docker/grpc_health_probe.py", "127.0.0.1:50052", "--service", "ddnn.v1.Cloud"]
ENTRYPOINT []
CMD ["python", "-m", "services.cloud"]
