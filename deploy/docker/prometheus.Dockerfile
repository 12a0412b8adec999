# Prometheus for CI's compose runs, from Debian's `prometheus` package (2.42, the version promtool checks
# deploy/prometheus with), for machines that cannot pull prom/prometheus. Users keep the upstream image:
# docker-compose.yml uses it unless DDNN_PROMETHEUS_IMAGE names this one. Built by `make images`
# (scripts/build_images.py) with the .deb, fetched on the host by `apt-get download prometheus`, as
# its build context; the package is unpacked inside the build (no network, no maintainer scripts).
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS deb
ARG DEB=prometheus.deb
COPY ${DEB} /tmp/prometheus.deb
RUN dpkg-deb -x /tmp/prometheus.deb /x

FROM ${BASE_IMAGE}
COPY --from=deb /x/usr/bin/prometheus /x/usr/bin/promtool /usr/bin/
# Like the upstream image: user nobody, data in /prometheus, config in /etc/prometheus.
RUN install -d -o 65534 -g 65534 /prometheus /etc/prometheus
USER 65534:65534
WORKDIR /prometheus
VOLUME /prometheus
EXPOSE 9090
HEALTHCHECK --interval=10s --timeout=5s --retries=3 \
  CMD ["promtool", "query", "instant", "http://127.0.0.1:9090", "vector(1)"]
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
