#!/usr/bin/env bash
# Run every fuzz target for SECONDS (default 300) each, JOBS (default 2) at a time, on seeds
# made from the captures. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`). Findings land in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-300}
JOBS=${JOBS:-2}
./seed-corpus.sh >/dev/null
cargo +nightly fuzz build -O
mkdir -p logs
targets=$(cargo +nightly fuzz list)
printf '%s\n' $targets | xargs -P "$JOBS" -I{} sh -c \
  "cargo +nightly fuzz run -O {} -- -max_total_time=$SECONDS_EACH -rss_limit_mb=2048 -max_len=1048576 > logs/{}.log 2>&1 && echo '{}: ok' || echo '{}: FAILED (see fuzz/logs/{}.log)'"
for t in $targets; do grep -E '^(Done|#[0-9]+ +DONE)' "logs/$t.log" | tail -1 | sed "s/^/$t: /"; done
