# ddnn edge service: the shallow segments and exit policy, gRPC ddnn.v1.Edge on 50051, /metrics on 9101.
# Built by `make images` (scripts/build_images.py), which passes WHEELS_IMAGE (a wheelhouse of the pinned
# requirement files, downloaded on the host) and, where the public base cannot be pulled, a local Debian
# base made with debootstrap. Nothing is fetched inside the build: pip installs with --no-index.
#   docker build -f deploy/docker/edge.Dockerfile -t ddnn-edge:0.1.0 \
#     --build-arg WHEELS_IMAGE=ddnn-wheels:current [--build-arg BASE_IMAGE=ddnn-base:bookworm-...] .
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
# (pip and setuptools leave the venv after the check: nothing at run time installs, and it keeps the
# edge image under 400 MB)
FROM ${BASE_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INDEX=1
COPY deploy/docker/requirements/runtime.txt /tmp/req/
COPY --from=wheels /wheels/runtime /wheels
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheels --no-deps --require-hashes -r /tmp/req/runtime.txt \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/pip uninstall -y -q pip setuptools

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
    DDNN_EDGE_LISTEN=0.0.0.0:50051 \
    DDNN_EDGE_METRICS_ADDR=0.0.0.0 \
    DDNN_EDGE_METRICS_PORT=9101 \
    DDNN_EDGE_CHECKPOINT=/app/models/resnet20w32-cifar10.pt \
    DDNN_EDGE_BUNDLE=/app/models/resnet20w32-cifar10.bundle \
    DDNN_EDGE_POLICY=/app/models/resnet20w32-cifar10.policy.json
WORKDIR /app
COPY --from=deps /opt/venv /opt/venv
COPY models/resnet20w32-cifar10.policy.json models/resnet20w32-cifar10.onnxruntime-int8.policy.json models/
COPY models/resnet20w32-cifar10.bundle/ models/resnet20w32-cifar10.bundle/
COPY deploy/docker/grpc_health_probe.py deploy/docker/
# the code last: what changes most often rebuilds the fewest layers
COPY ddnn/ ddnn/
COPY --from=protos /src/ddnn/pb/ ddnn/pb/
COPY services/ services/
USER 10001:10001
EXPOSE 50051 9101
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/app/deploy/docker/grpc_health_probe.py", "127.0.0.1:50051", "--service", "ddnn.v1.Edge"]
ENTRYPOINT ["python", "-m", "services.edge"]
