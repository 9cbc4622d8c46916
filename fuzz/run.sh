#!/usr/bin/env bash
# Fuzzes each target with the renderer's resource bounds as failures (see README.md):
#   fuzz/run.sh [seconds per target, default 300] [target...]   (default: both targets)
# Inputs go up to 64 KiB from the start; an input that takes over a second, an allocation of
# 30 MB, or the process growing 30 MB past its RSS after the seed corpus is a crash; so is a
# render holding over 30 MiB of heap (checked in the targets, see src/lib.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
shift $(($# > 0 ? 1 : 0))
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(payload_render markdown)
fi
export RUSTC_BOOTSTRAP=1
# ASan holds freed memory back in a quarantine (256 MB by default), which would read as
# growth; safe Rust gains little from it.
export ASAN_OPTIONS="quarantine_size_mb=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
fuzz/seed-corpus.sh
for target in "${targets[@]}"; do
  baseline=$(cargo fuzz run -O "$target" -- -runs=0 -max_len=65536 2>&1 |
    sed -n 's/.*INITED.* rss: \([0-9]*\)Mb.*/\1/p' | tail -n 1)
  echo "$target: RSS after the corpus ${baseline} MB; limit $((baseline + 30)) MB"
  cargo fuzz run -O "$target" -- \
    -max_len=65536 -len_control=0 \
    -timeout=1 -rss_limit_mb=$((baseline + 30)) -malloc_limit_mb=30 \
    -max_total_time="$seconds" -dict=fuzz/markdown.dict -print_final_stats=1
done
