# Common tasks; `just --list` shows them. Each is a plain cargo command underneath.

# Run the bridge in dry-run mode: no Slack needed, messages are rendered and logged.
dry-run:
    cargo run --release -- --dry-run

# The whole test suite (hermetic: loopback only).
test:
    cargo test

# What CI runs.
ci:
    bash .ci/run

# Print the Slack message one Coder payload becomes.
preview FILE:
    cargo run --release -- preview {{FILE}}

lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings

# Criterion benches (parse + render + wire JSON; the store's claim), then the load driver:
# the bridge binary and the floor (examples/floor.rs, a bare relay) against one fake Slack in
# one run, the bridge's figures printed as ratios to the floor's. The driver takes N
# (webhooks, 5000), C (concurrency, 20), U (users, 50) from the environment.
bench:
    cargo bench --bench render
    cargo bench --bench store
    # The binary on its own first: built with the examples, it would carry their
    # dev-dependencies' features (HTTP/2 among them) and not be the binary people run.
    cargo build --release --bin coder-slack-bridge
    cargo build --release --example floor --example load
    target/release/examples/load --bridge-bin target/release/coder-slack-bridge --floor-bin target/release/examples/floor
