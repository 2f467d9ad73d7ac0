# syntax=docker/dockerfile:1
# The worker image: built in a Rust image, run from a small one as an unprivileged user.
#   docker build -t tesoro-webhooks .
#   docker run -e TESORO_WEBHOOKS__API__LISTEN=0.0.0.0:8080 ... tesoro-webhooks
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tesoro-webhooks \
    && strip target/release/tesoro-webhooks

# glibc and libgcc only: no shell, no package manager. `nonroot` is uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/tesoro-webhooks /usr/local/bin/tesoro-webhooks
# Inside a container the admin API must listen beyond loopback.
ENV TESORO_WEBHOOKS__API__LISTEN=0.0.0.0:8080
EXPOSE 8080
USER nonroot
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/tesoro-webhooks", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/tesoro-webhooks"]
CMD ["run"]
