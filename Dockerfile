# syntax=docker/dockerfile:1
#
# coder-slack-bridge container image: a release build on Debian bookworm, run on distroless
# (glibc, libgcc, CA certificates, no shell) as the unprivileged `nonroot` user (65532).
#
#   docker build -t coder-slack-bridge .
#   docker run --rm -p 6000:6000 -v coder-slack-bridge:/var/lib/coder-slack-bridge \
#       -e SLACK_BOT_TOKEN=xoxb-… -e SLACK_APP_TOKEN=xapp-… \
#       -e WEBHOOK_SECRET=… -e CODER_URL=… coder-slack-bridge
#
# The image listens on 0.0.0.0:6000, so WEBHOOK_SECRET is required (the bridge refuses a
# non-loopback listener without it). It only needs outbound HTTPS (Slack); TLS is verified
# against the system CA store, which the distroless runtime image provides.
#
# The store: the working directory is /var/lib/coder-slack-bridge, a VOLUME owned by the
# runtime user, so the default DATABASE_URL (sqlite://coder-slack-bridge.db, relative to the
# working directory) puts the SQLite file and its -wal/-shm files there. Mount a named volume
# on it (as above) to keep the store across containers; without one Docker creates an
# anonymous volume. SQLite is for one container; for several replicas, set
# DATABASE_URL=postgres://USER:PASSWORD@HOST:PORT/DATABASE (add ?sslmode=require for TLS) and
# no volume is needed. `docker run … coder-slack-bridge check` verifies the store too.

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
 && install -D -m 0755 target/release/coder-slack-bridge /out/coder-slack-bridge \
 && install -d -m 0750 /out/state

############################ runtime ############################
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=build /out/coder-slack-bridge /coder-slack-bridge

# The state folder (SQLite store): distroless has no shell to mkdir/chown, so an empty folder
# from the build stage is copied in, owned by the runtime user. It is the working directory, so
# the default DATABASE_URL=sqlite://coder-slack-bridge.db lands in the volume with no setting.
# A new named volume takes this folder's owner and mode, so the bridge can write to it.
COPY --from=build --chown=65532:65532 /out/state /var/lib/coder-slack-bridge
WORKDIR /var/lib/coder-slack-bridge
VOLUME /var/lib/coder-slack-bridge

ENV LISTEN_ADDR=0.0.0.0:6000
EXPOSE 6000

# `nonroot` in distroless, given numerically so Kubernetes' runAsNonRoot can verify it.
USER 65532:65532

# SIGTERM (docker stop, Kubernetes, systemd) → graceful shutdown, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/coder-slack-bridge"]
CMD ["serve"]
