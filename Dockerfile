# syntax=docker/dockerfile:1
#
# coder-slack-bridge container image: a release build on Debian bookworm, run on distroless
# (glibc, libgcc, CA certificates, no shell) as the unprivileged `nonroot` user (65532).
#
#   docker build -t coder-slack-bridge .
#   docker run --rm -p 6000:6000 -e SLACK_BOT_TOKEN=xoxb-… -e SLACK_APP_TOKEN=xapp-… \
#       -e WEBHOOK_SECRET=… -e CODER_URL=https://coder.example.com coder-slack-bridge
#
# The image listens on 0.0.0.0:6000, so WEBHOOK_SECRET is required (the bridge refuses a
# non-loopback listener without it). It only needs outbound HTTPS (Slack); TLS is verified
# against the system CA store, which the distroless runtime image provides.

############################ build ############################
FROM rust:1-bookworm AS build
WORKDIR /src

# The whole context (see .dockerignore): Cargo.toml declares targets outside src/ (benches),
# and cargo refuses a manifest whose declared targets are missing. Registry and target dir are
# BuildKit cache mounts, so a rebuild after editing src/ downloads and recompiles nothing else.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin coder-slack-bridge \
 && install -D -m 0755 target/release/coder-slack-bridge /out/coder-slack-bridge

############################ runtime ############################
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=build /out/coder-slack-bridge /coder-slack-bridge

ENV LISTEN_ADDR=0.0.0.0:6000
EXPOSE 6000

# `nonroot` in distroless, given numerically so Kubernetes' runAsNonRoot can verify it.
USER 65532:65532

# SIGTERM (docker stop, Kubernetes, systemd) → graceful shutdown, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/coder-slack-bridge"]
CMD ["serve"]
