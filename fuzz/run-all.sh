#!/usr/bin/env bash
# Builds and runs every fuzz target for SECONDS each (default 30), starting
# from the committed seeds. Exits non-zero if a target finds a crash.
# Inputs may reach 64 KiB, so chunks on both sides of the stream decoder's
# 4 KiB coalescing threshold are exercised (libFuzzer's default is 4 KiB).
# The stable toolchain needs RUSTC_BOOTSTRAP=1 for cargo fuzz.
set -euo pipefail
seconds="${1:-30}"
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
targets=$(cargo fuzz list)
cargo fuzz build
for t in $targets; do
    mkdir -p "corpus/$t"
    echo "--- fuzz $t for ${seconds}s"
    log="$(mktemp)"
    if ! cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$seconds" -max_len=65536 -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz target $t failed; artifacts in fuzz/artifacts/$t" >&2
        exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' "$log" || tail -n 5 "$log"
    rm -f "$log"
done
