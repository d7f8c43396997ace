#!/usr/bin/env bash
# Run every fuzz target (or those named after the options) on seeds from the captures, the API
# server's manifests and hand-made protobuf bodies, patches and MQTT packets. Needs the nightly
# toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Findings land in fuzz/artifacts/<target>/.
#
#   fuzz/run-all.sh [SECONDS] [TARGET...]   each target for SECONDS (default 300)
#   RUNS=10000000 fuzz/run-all.sh [TARGET...] each target for RUNS executions instead
#   JOBS=1 ...                               targets at a time (default 2)
#   SANITIZER=none ...                       without AddressSanitizer (the crates have no
#                                            unsafe code; 3-4x the executions per second)
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=300
if [[ ${1:-} =~ ^[0-9]+$ ]]; then
  SECONDS_EACH=$1
  shift
fi
JOBS=${JOBS:-2}
if [[ -n ${RUNS:-} ]]; then
  limit="-runs=$RUNS"
else
  limit="-max_total_time=$SECONDS_EACH"
fi
./seed-corpus.sh >/dev/null
san=${SANITIZER:+-s $SANITIZER}
cargo +nightly fuzz build -O $san
mkdir -p logs
if [[ $# -gt 0 ]]; then
  targets="$*"
else
  targets=$(cargo +nightly fuzz list)
fi
printf '%s\n' $targets | xargs -P "$JOBS" -I{} sh -c \
  "cargo +nightly fuzz run -O $san {} -- $limit -rss_limit_mb=2048 -max_len=1048576 -print_final_stats=1 > logs/{}.log 2>&1 && echo '{}: ok' || echo '{}: FAILED (see fuzz/logs/{}.log)'"
# One line per target: executions, executions per second and wall time.
for t in $targets; do
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$t.log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "logs/$t.log" | tail -1)
  secs=$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "logs/$t.log" | tail -1 | grep -oE '[0-9]+ second' | cut -d' ' -f1)
  echo "$t: ${runs:-?} runs, ${rate:-?} exec/s${secs:+, ${secs} s}"
done
