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
