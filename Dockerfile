# syntax=docker/dockerfile:1
# Multi-stage: build with the full toolchain, run from a small image as a
# non-root user. protox compiles the protos, so no protoc is needed, and
# rustls + RustCrypto mean no OpenSSL at run time.

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
# jemalloc (tikv-jemalloc-sys) is built with configure and make; the slim
# image has the C compiler but not make.
RUN apt-get update && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked --bin auth-service && mkdir /data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /src/target/release/auth-service /usr/local/bin/auth-service
# SQLite (the default) keeps its database and generated key here: mount a
# volume, or set AUTH_DATABASE_URL=postgres://… and AUTH_JWT_SECRET.
# distroless has no shell to mkdir/chown, so an empty directory is copied in.
COPY --from=builder --chown=nonroot:nonroot /data /var/lib/auth-service
WORKDIR /var/lib/auth-service
ENV AUTH_LISTEN_ADDR=0.0.0.0:50051 \
    AUTH_DATABASE_URL=sqlite:///var/lib/auth-service/auth.db?mode=rwc
USER nonroot:nonroot
# gRPC; and the HTTP listener (JWKS, /metrics) once AUTH_HTTP_ADDR=0.0.0.0:8080.
EXPOSE 50051 8080
# No HEALTHCHECK: distroless has no shell or probe binary. Orchestrators
# probe gRPC health on 50051 (Kubernetes: a `grpc` probe), which reports
# NOT_SERVING while the database is unreachable.
ENTRYPOINT ["/usr/local/bin/auth-service"]
CMD ["serve"]
