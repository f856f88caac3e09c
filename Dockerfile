# Multi-stage build: compile in the Rust image, run as an unprivileged user in a slim one.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p portcullis-server

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin portcullis
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
USER 10001
ENV PORTCULLIS__SERVER__HOST=0.0.0.0 \
    PORTCULLIS__SERVER__PORT=8080 \
    PORTCULLIS__LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["portcullis"]
CMD ["serve"]
