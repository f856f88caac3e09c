# Multi-stage build, for machines with a registry: compile in the Rust image, run as an
# unprivileged user in a slim one. Without a registry, scripts/images.sh builds
# portcullis-local/portcullis (deploy/images/portcullis/Dockerfile) with the same runtime layout:
# /usr/local/bin/portcullis, user 10001, 0.0.0.0:8080, JSON logs, a healthcheck on /readyz.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p portcullis-server

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin portcullis
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
USER 10001
ENV PORTCULLIS__SERVER__HOST=0.0.0.0 \
    PORTCULLIS__SERVER__PORT=8080 \
    PORTCULLIS__LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=2s --timeout=2s --retries=30 CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/readyz"]
ENTRYPOINT ["portcullis"]
CMD ["serve"]
