# ddnn load generator: replays the CIFAR-10 test split (baked in) against an edge, writes report.json and
# samples.csv to /results, running accuracies on /metrics (9103). A batch job: it exits when done.
# Built by `make images` (scripts/build_images.py; see edge.Dockerfile), from the repository root.
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
    DDNN_LOADGEN_DATA=/app/data/cifar10-test.npz \
    DDNN_LOADGEN_OUT=/results \
    DDNN_LOADGEN_METRICS_ADDR=0.0.0.0 \
    DDNN_LOADGEN_METRICS_PORT=9103 \
    DDNN_LOADGEN_PROGRESS=false
WORKDIR /app
COPY --from=deps /opt/venv /opt/venv
COPY data/cifar10-test.npz data/
COPY deploy/docker/grpc_health_probe.py deploy/docker/
RUN install -d -o ddnn -g ddnn /results
# the code last: what changes most often rebuilds the fewest layers
COPY ddnn/ ddnn/
COPY --from=protos /src/ddnn/pb/ ddnn/pb/
COPY services/ services/
VOLUME /results
USER 10001:10001
EXPOSE 9103
STOPSIGNAL SIGTERM
# A client has no gRPC server of its own: healthy while its /metrics endpoint answers.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9103/metrics', timeout=3)"]
ENTRYPOINT ["python", "-m", "services.loadgen"]
