# Shared setup of the collector-level benchmarks, sourced by scripts/bench-collector.sh and
# scripts/bench-tailsampling.sh (not run on its own). Before sourcing, a script sets
#   BENCH      its name (message prefix, temp dir /tmp/$BENCH.XXXXXX)
#   PORT_BASE  its default port base (the user's PORT_BASE wins)
# and gets:
#   ROOT, cwd = ROOT; BIN (OTELCOL_BIN or build/otelcol/otelcol-traceconsistency, built by
#   make otelcol when missing); PIN (taskset placement: collector on core 0, load source on
#   core 1; default 1 when taskset exists and there are 2+ CPUs); COL_CMD / GEN_PIN (the
#   command prefixes that place them); TMP; the ports OTLP_PORT (PORT_BASE+317),
#   METRICS_PORT (+888), HEALTH_PORT (+133); COL_PID, GEN_PID, BACKEND_PID, which the exit
#   trap stops (and TMP removed); DRY_RUN (1: set up, validate each config with the
#   collector, start nothing);
#   and the functions bench_ports_free, wait_healthy, stop_pid, metric, cpu_ticks, hwm_kb,
#   rss_kb, validate_config (CLK_TCK: clock ticks per second).
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${OTELCOL_BIN:-$ROOT/build/otelcol/otelcol-traceconsistency}"
DRY_RUN="${DRY_RUN:-0}"
OTLP_PORT=$((PORT_BASE + 317))
METRICS_PORT=$((PORT_BASE + 888))
HEALTH_PORT=$((PORT_BASE + 133))
if [[ -z "${PIN:-}" ]]; then
  if command -v taskset >/dev/null && [[ "$(nproc)" -ge 2 ]]; then PIN=1; else PIN=0; fi
fi
COL_CMD=("$BIN")
GEN_PIN=()
if [[ "$PIN" == 1 ]]; then
  COL_CMD=(taskset -c 0 "$BIN")
  GEN_PIN=(taskset -c 1)
fi

if [[ ! -x "$BIN" ]]; then
  echo "$BENCH: $BIN missing; running make otelcol"
  make otelcol
fi

TMP="$(mktemp -d "/tmp/$BENCH.XXXXXX")"
COL_PID=""
GEN_PID=""
BACKEND_PID=""

# stop_pid PID [TENTHS]: SIGTERM, up to TENTHS tenths of a second (default 50) to exit, then
# SIGKILL.
stop_pid() {
  [[ -n "$1" ]] || return 0
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq "${2:-50}"); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}
bench_cleanup() {
  [[ -n "$GEN_PID" ]] && kill "$GEN_PID" 2>/dev/null || true
  stop_pid "$BACKEND_PID"
  stop_pid "$COL_PID"
  rm -rf "$TMP"
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# bench_ports_free PORT...: exits when one of them is in use on 127.0.0.1.
bench_ports_free() {
  local p
  for p in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$BENCH: 127.0.0.1:$p is in use; set PORT_BASE" >&2
      exit 1
    fi
  done
}

# wait_healthy PORT PID LOG WHAT: up to 30 s for the health check on PORT; exits (showing LOG)
# when it does not answer or PID ends.
wait_healthy() {
  local ok=0
  for _ in $(seq 300); do
    if curl -sf --max-time 1 "http://127.0.0.1:$1/" >/dev/null 2>&1; then ok=1; break; fi
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  if [[ "$ok" != 1 ]]; then echo "$BENCH: $4 did not become healthy:" >&2; cat "$3" >&2; exit 1; fi
}

# validate_config FILE WHAT: the collector's validate on FILE (the dry run's check).
validate_config() {
  "$BIN" validate --config "$1" >"$TMP/validate.log" 2>&1 \
    || { echo "$BENCH: the config of $2 is invalid:" >&2; cat "$TMP/validate.log" >&2; exit 1; }
  echo "  $2: config valid ($1)"
}

# metric NAME: sum of every series of NAME (with or without _total) at the telemetry port.
metric() {
  curl -s --max-time 2 "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null |
    awk -v n="$1" '$1 == n || $1 == n "_total" || index($1, n "{") == 1 || index($1, n "_total{") == 1 { s += $NF } END { printf "%.0f\n", s + 0 }'
}
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; } # utime + stime of PID, in clock ticks
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
CLK_TCK="$(getconf CLK_TCK)"
