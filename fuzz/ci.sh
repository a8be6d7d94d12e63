#!/usr/bin/env bash
# Fuzzes every target for a bounded time from its committed corpus, on the stable toolchain and
# without installing cargo-fuzz: builds the targets with the coverage instrumentation libFuzzer
# needs (the flags `cargo fuzz build -s none` passes), then runs each binary. A crash fails the
# run and leaves its input in fuzz/artifacts/TARGET/ (see docs/operations.md, Fuzzing).
#
#   fuzz/ci.sh [SECONDS_PER_TARGET]     (default 15)
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-15}
targets=(frames channels content_header field_table definitions mqtt_packet stomp_frame management_json)
host=$(rustc -vV | sed -n 's/^host: //p')
# --target keeps these flags off build scripts and proc macros, as cargo-fuzz does.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
cargo build --release --target "$host" --target-dir target/ci $(printf -- '--bin %s ' "${targets[@]}")
for target in "${targets[@]}"; do
  # New inputs go to a scratch directory; the committed corpus is only read.
  scratch=$(mktemp -d)
  mkdir -p "artifacts/$target"
  log=$(mktemp)
  echo "fuzz: $target for ${seconds}s"
  if ! "target/ci/$host/release/$target" -max_total_time="$seconds" -print_final_stats=1 \
      -artifact_prefix="artifacts/$target/" "$scratch" "corpus/$target" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $target crashed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E "^stat::(number_of_executed_units|new_units_added)" "$log" | sed "s/^/fuzz: $target /" || true
  rm -rf "$scratch" "$log"
done
