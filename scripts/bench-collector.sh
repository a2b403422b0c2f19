#!/usr/bin/env bash
# Collector-level benchmark: the built collector
# (build/otelcol/otelcol-traceconsistency) with
#   ours          processors: [traceconsistency]       quiet_period = WAIT
#   groupbytrace  processors: [groupbytrace]           wait_duration = WAIT (num_workers default 1)
#   none          processors: []                       (no assembly processor)
# each driven over loopback OTLP/gRPC (127.0.0.1 only) at saturation (no rate limit, several
# streams) for a fixed duration, by two load sources in turn:
#   tracegen  tests/cmd/tracegen -mode pdata: plans, renders and marshals every batch while it
#             sends (~5 µs of CPU per span). On its own core it tops out near 200k spans/s,
#             below what the collector without an assembly processor takes.
#   replay    tests/bench/cmd/replay: the same tracegen workload serialized once and replayed
#             with fresh trace IDs (one gRPC call per 100-span batch), so that the collector,
#             not the load source, is the bottleneck.
# Measured per configuration:
#   spans/s     spans acknowledged by the receiver / load source's elapsed send time
#               (cross-checked with the collector's otelcol_receiver_accepted_spans)
#   cpu cores   collector CPU while the load ran / elapsed (1.00 = its core saturated)
#   cpu µs/span collector utime+stime (/proc/PID/stat) from just before the load starts
#               until the exporter has sent every accepted span (otelcol_exporter_sent_spans),
#               / accepted spans
#   peak RSS    VmHWM of the collector; avg RSS sampled every 0.5s during the load
# and the ratios ours/none and ours/groupbytrace (median run by spans/s when REPEAT > 1).
#
# Exporter: `file` to /dev/null, format proto. It consumes every span the way a real
# exporter does (serializes each call to OTLP protobuf and writes it) without a network
# peer; the debug exporter would only count spans (cheaper than any real exporter), and at
# verbosity basic it logs one line per call. Set BENCH_EXPORTER=debug for that variant
# (verbosity basic, sampling_initial 1, sampling_thereafter 1000000).
#
# CPU placement (PIN=1, the default when taskset exists): collector on core 0, generator on
# core 1, so they do not compete (each Go runtime then sees GOMAXPROCS=1). PIN=0 lets both
# share the 2 cores (the generator then takes CPU from the collector).
#
# Environment (defaults):
#   DURATION=20s  load per configuration   STREAMS=4  concurrent gRPC streams
#   WARMUP=0      untimed load before each run (e.g. 20s), until it is all exported; the peak
#                 RSS is reset after it. The engine waits longer for children it has not
#                 learned yet during its first 15 s (its cold start); WARMUP=20s measures past it
#   WAIT=1s       quiet_period / wait_duration      CONFIGS="none groupbytrace ours"
#                 (also: ours-wal-batch, ours-wal-interval: ours with the write-ahead log in
#                 the temp dir, wal.sync batch / interval 100ms; ratios against ours;
#                 ours-otlp-queue, ours-otlp-wait: ours with the log (wal.sync batch)
#                 exporting through otlp_grpc to a backend collector (otlp receiver ->
#                 file /dev/null, started once, on the load source's core), with the
#                 exporter's default in-memory queue / with the README's safe settings
#                 (sending_queue.wait_for_result, max_concurrent_sends 10 calls in
#                 flight); ratio wait / queue against the target 0.9)
#   REPEAT=1      runs per configuration (the table shows the median by spans/s)
#   PIN=1         taskset pinning                   BENCH_EXPORTER=file|debug
#   LOADERS="tracegen replay"  load sources to run, in order (LOADER=x runs only x)
#   FEATURE_GATES=""  passed to the collector as --feature-gates (e.g. pdata.useProtoPooling)
#   PORT_BASE=47000  OTLP gRPC = PORT_BASE+317, metrics = PORT_BASE+888, health = PORT_BASE+133
#                    (the backend: +1317, +1888, +1133)
#   DRY_RUN=0     1: build the load sources, write every config and validate it with the
#                 collector, start nothing (scripts/bench-common.sh)
# Builds nothing except `make otelcol` when the collector binary is missing, and the two load
# sources (go build of tests/cmd/tracegen and tests/bench/cmd/replay into the temp dir).
# Every process it starts is stopped on exit (trap), and the temp dir removed.
set -euo pipefail

BENCH=bench-collector
DURATION="${DURATION:-20s}"
WARMUP="${WARMUP:-0}"
STREAMS="${STREAMS:-4}"
WAIT="${WAIT:-1s}"
CONFIGS="${CONFIGS:-none groupbytrace ours}"
REPEAT="${REPEAT:-1}"
EXPORTER="${BENCH_EXPORTER:-file}"
LOADERS="${LOADERS:-${LOADER:-tracegen replay}}"
PORT_BASE="${PORT_BASE:-47000}"
FEATURE_GATES="${FEATURE_GATES:-}"
# Setup, ports, placement, cleanup and the measuring helpers (shared with bench-tailsampling.sh).
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
BACKEND_OTLP_PORT=$((PORT_BASE + 1317))
BACKEND_HEALTH_PORT=$((PORT_BASE + 1133))
BACKEND_METRICS_PORT=$((PORT_BASE + 1888))
bench_ports_free "$OTLP_PORT" "$METRICS_PORT" "$HEALTH_PORT" "$BACKEND_OTLP_PORT" "$BACKEND_HEALTH_PORT" "$BACKEND_METRICS_PORT"

echo "bench-collector: building the load sources ($LOADERS)"
(cd tests && go build -o "$TMP/tracegen" ./cmd/tracegen && go build -o "$TMP/replay" ./bench/cmd/replay)
loader_args() { # loader -> args
  if [[ "$1" == replay ]]; then echo "-traces 8000"; else echo "-mode pdata -seed 1 -traces 100000000"; fi
}

write_config() { # name file
  local name="$1" file="$2" procs exporter exporter_id="$EXPORTER"
  case "$name" in
    ours) procs="[traceconsistency]" ;;
    ours-wal-batch) procs="[traceconsistency/walbatch]" ;;
    ours-wal-interval) procs="[traceconsistency/walinterval]" ;;
    ours-otlp-queue) procs="[traceconsistency/walbatch]"; exporter_id=otlp_grpc/queue ;;
    ours-otlp-wait) procs="[traceconsistency/walbatch]"; exporter_id=otlp_grpc/wait ;;
    groupbytrace) procs="[groupbytrace]" ;;
    none) procs="[]" ;;
    *) echo "unknown config $name" >&2; exit 2 ;;
  esac
  if [[ "$EXPORTER" == debug ]]; then
    exporter="debug:
    verbosity: basic
    sampling_initial: 1
    sampling_thereafter: 1000000"
  else
    exporter="file:
    path: /dev/null
    format: proto"
  fi
  cat >"$file" <<EOF
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:$OTLP_PORT
processors:
  traceconsistency:
    quiet_period: $WAIT
  traceconsistency/walbatch:
    quiet_period: $WAIT
    wal: {directory: $TMP/wal-$name-batch, sync: batch}
  traceconsistency/walinterval:
    quiet_period: $WAIT
    wal: {directory: $TMP/wal-$name-interval, sync: interval, sync_interval: 100ms}
  groupbytrace:
    wait_duration: $WAIT
exporters:
  $exporter
  otlp_grpc/queue:
    endpoint: 127.0.0.1:$BACKEND_OTLP_PORT
    tls: {insecure: true}
  otlp_grpc/wait:
    endpoint: 127.0.0.1:$BACKEND_OTLP_PORT
    tls: {insecure: true}
    timeout: 5s
    sending_queue: {enabled: true, wait_for_result: true, sizer: requests, queue_size: 20, num_consumers: 10}
    retry_on_failure: {enabled: true, initial_interval: 100ms, max_interval: 1s, max_elapsed_time: 10s}
extensions:
  health_check:
    endpoint: 127.0.0.1:$HEALTH_PORT
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      processors: $procs
      exporters: [${exporter_id}]
  telemetry:
    logs:
      level: warn
    metrics:
      level: normal
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: $METRICS_PORT
EOF
}

run_one() { # loader name run
  local loader="$1" name="$2" run="$3" cfg="$TMP/$2.yaml" log="$TMP/$1.$2.$3.log"
  local RESULTS="$TMP/results.$loader.tsv"
  write_config "$name" "$cfg"
  "${COL_CMD[@]}" --config "$cfg" ${FEATURE_GATES:+"--feature-gates=$FEATURE_GATES"} >"$log" 2>&1 &
  COL_PID=$!
  wait_healthy "$HEALTH_PORT" "$COL_PID" "$log" "collector ($name)"
  sleep 1 # past our processor's start wait and the first ticks
  if [[ "$WARMUP" != 0 ]]; then
    # Untimed: the same load for WARMUP, until every span of it is exported; then the peak
    # RSS is reset (clear_refs 5), so the run measures the collector past its cold start.
    local wsent wstart
    # shellcheck disable=SC2046
    "${GEN_PIN[@]}" "$TMP/$loader" -endpoint "127.0.0.1:$OTLP_PORT" $(loader_args "$loader") -duration "$WARMUP" \
      -concurrency "$STREAMS" -json >"$TMP/warm.$loader.$name.$run.json" 2>"$TMP/warm.$loader.$name.$run.err" \
      || { echo "bench-collector: warm-up load failed ($name):" >&2; cat "$TMP/warm.$loader.$name.$run.err" >&2; exit 1; }
    wstart="$(date +%s)"
    while :; do
      wsent="$(metric otelcol_exporter_sent_spans)"
      [[ "$wsent" -ge "$(metric otelcol_receiver_accepted_spans)" ]] && break
      if (( $(date +%s) - wstart > 60 )); then echo "bench-collector: $name: warm-up not exported after 60s" >&2; break; fi
      sleep 0.1
    done
    echo 5 >"/proc/$COL_PID/clear_refs" 2>/dev/null || echo "bench-collector: cannot reset the peak RSS after the warm-up" >&2
  fi
  local acc0 sent0 cpu0 t0 gen_out
  acc0="$(metric otelcol_receiver_accepted_spans)"
  sent0="$(metric otelcol_exporter_sent_spans)"
  cpu0="$(cpu_ticks "$COL_PID")"
  t0="$(date +%s.%N)"
  gen_out="$TMP/gen.$loader.$name.$run.json"
  # shellcheck disable=SC2046
  "${GEN_PIN[@]}" "$TMP/$loader" -endpoint "127.0.0.1:$OTLP_PORT" $(loader_args "$loader") -duration "$DURATION" \
    -concurrency "$STREAMS" -json >"$gen_out" 2>"$TMP/gen.$loader.$name.$run.err" &
  GEN_PID=$!
  # Sample the collector's RSS during the run (VmHWM also covers it; this is the average).
  local rss_sum=0 rss_n=0
  while kill -0 "$GEN_PID" 2>/dev/null; do
    rss_sum=$((rss_sum + $(rss_kb "$COL_PID"))); rss_n=$((rss_n + 1))
    sleep 0.5
  done
  wait "$GEN_PID" || { echo "bench-collector: generator failed ($name):" >&2; cat "$TMP/gen.$loader.$name.$run.err" "$gen_out" >&2; exit 1; }
  GEN_PID=""
  local t_gen_end cpu_mid acc sent drain_start
  t_gen_end="$(date +%s.%N)"
  cpu_mid="$(cpu_ticks "$COL_PID")"
  acc=$(( $(metric otelcol_receiver_accepted_spans) - acc0 ))
  # Wait (bounded) until the exporter has sent every accepted span: the assembling
  # processors release the last traces one wait after they arrived.
  drain_start="$(date +%s)"
  while :; do
    sent=$(( $(metric otelcol_exporter_sent_spans) - sent0 ))
    [[ "$sent" -ge "$acc" ]] && break
    if (( $(date +%s) - drain_start > 60 )); then echo "bench-collector: $name: only $sent of $acc spans exported after 60s" >&2; break; fi
    sleep 0.1
  done
  local t_done cpu1 hwm
  t_done="$(date +%s.%N)"
  cpu1="$(cpu_ticks "$COL_PID")"
  hwm="$(hwm_kb "$COL_PID")"
  local spans gsec gsps
  spans="$(sed -n 's/.*"spans":\([0-9]*\).*/\1/p' "$gen_out")"
  gsec="$(sed -n 's/.*"seconds":\([0-9.eE+-]*\).*/\1/p' "$gen_out")"
  gsps="$(sed -n 's/.*"spans_per_second":\([0-9.eE+-]*\).*/\1/p' "$gen_out")"
  local cpu_s cpu_us drain_s avg_rss
  cpu_s="$(awk -v a="$cpu0" -v b="$cpu1" -v h="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / h }')"
  cpu_us="$(awk -v c="$cpu_s" -v n="$acc" 'BEGIN { v = 0; if (n > 0) v = c * 1e6 / n; printf "%.2f", v }')"
  drain_s="$(awk -v a="$t_gen_end" -v b="$t_done" 'BEGIN { printf "%.2f", b - a }')"
  avg_rss=$(( rss_n > 0 ? rss_sum / rss_n : 0 ))
  # Collector CPU use while the load source was sending, in cores (1.00 = one core busy).
  local util
  util="$(awk -v a="$cpu0" -v b="$cpu_mid" -v h="$CLK_TCK" -v g="$gsec" 'BEGIN { v = 0; if (g > 0) v = (b - a) / h / g; printf "%.2f", v }')"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$run" "$spans" "$gsec" "$gsps" "$acc" "$sent" \
    "$cpu_s" "$cpu_us" "$((hwm / 1024))" "$((avg_rss / 1024))" "$util" >>"$RESULTS"
  printf '  %-8s %-13s run %d: %s spans in %.1fs = %.0f spans/s; accepted %s, exported %s (drain %ss); collector CPU %ss (%s cores) = %s µs/span; peak RSS %d MiB, avg %d MiB\n' \
    "$loader" "$name" "$run" "$spans" "$gsec" "$gsps" "$acc" "$sent" "$drain_s" "$cpu_s" "$util" "$cpu_us" "$((hwm / 1024))" "$((avg_rss / 1024))"
  stop_pid "$COL_PID" 100
  wait "$COL_PID" 2>/dev/null || true
  COL_PID=""
}

# The backend of the ours-otlp-* configurations: started once, pinned with the load source.
if [[ " $CONFIGS " == *" ours-otlp-"* ]]; then
  cat >"$TMP/backend.yaml" <<EOF
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:$BACKEND_OTLP_PORT
exporters:
  file:
    path: /dev/null
    format: proto
extensions:
  health_check:
    endpoint: 127.0.0.1:$BACKEND_HEALTH_PORT
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
  telemetry:
    logs:
      level: warn
    metrics:
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: $BACKEND_METRICS_PORT
EOF
  if [[ "$DRY_RUN" == 1 ]]; then
    validate_config "$TMP/backend.yaml" backend
  else
    "${GEN_PIN[@]}" "$BIN" --config "$TMP/backend.yaml" >"$TMP/backend.log" 2>&1 &
    BACKEND_PID=$!
    disown "$BACKEND_PID" # stopped by cleanup; no job report
    wait_healthy "$BACKEND_HEALTH_PORT" "$BACKEND_PID" "$TMP/backend.log" "the backend"
  fi
fi

if [[ "$DRY_RUN" == 1 ]]; then
  for name in $CONFIGS; do
    write_config "$name" "$TMP/$name.yaml"
    validate_config "$TMP/$name.yaml" "$name"
  done
  echo "bench-collector: dry run: load sources built ($LOADERS), configs valid ($CONFIGS); nothing started"
  exit 0
fi

echo "bench-collector: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), pin=$PIN, loaders=$LOADERS, duration=$DURATION, streams=$STREAMS, wait=$WAIT, exporter=$EXPORTER${FEATURE_GATES:+, feature gates $FEATURE_GATES}"
echo "  collector: $BIN"
for loader in $LOADERS; do
  : >"$TMP/results.$loader.tsv"
  for run in $(seq "$REPEAT"); do
    for name in $CONFIGS; do
      run_one "$loader" "$name" "$run"
    done
  done
done

for loader in $LOADERS; do
  echo
  echo "== collector benchmark, load source $loader ($( [[ $PIN == 1 ]] && echo 'collector on core 0, load source on core 1' || echo 'collector and load source share both cores'), $DURATION per run, $STREAMS streams, wait $WAIT, exporter $EXPORTER)"
  # Median run per configuration by spans/s.
  awk -F'\t' -v configs="$CONFIGS" '
    { n[$1]++; row[$1, n[$1]] = $0; sps[$1, n[$1]] = $5 }
    END {
      printf "%-13s %5s %10s %10s %10s %8s %10s %12s %13s %12s\n", "config", "runs", "spans", "spans/s", "accepted", "cpu s", "cpu cores", "cpu µs/span", "peak RSS MiB", "avg RSS MiB"
      k = split(configs, cs, " ")
      for (c = 1; c <= k; c++) {
        name = cs[c]; m = n[name]; if (m == 0) continue
        for (i = 1; i <= m; i++) idx[i] = i
        for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (sps[name, idx[j]] < sps[name, idx[i]]) { t = idx[i]; idx[i] = idx[j]; idx[j] = t }
        split(row[name, idx[int((m + 1) / 2)]], f, "\t")
        med[name] = f[5]; cpu[name] = f[9]; rss[name] = f[10]
        printf "%-13s %5d %10d %10.0f %10d %8.2f %10.2f %12.2f %13d %12d\n", name, m, f[3], f[5], f[6], f[8], f[12], f[9], f[10], f[11]
      }
      for (o = 1; o <= 2; o++) {
        other = (o == 1) ? "none" : "groupbytrace"
        if (("ours" in med) && (other in med) && med[other] > 0 && cpu[other] > 0 && rss[other] > 0)
          printf "ours / %-12s spans/s %.3f   cpu/span %.3f   peak RSS %.3f\n", other, med["ours"] / med[other], cpu["ours"] / cpu[other], rss["ours"] / rss[other]
      }
      if (("ours" in med) && ("groupbytrace" in med) && med["groupbytrace"] > 0)
        printf "target ours / groupbytrace spans/s >= 2: %s\n", (med["ours"] / med["groupbytrace"] >= 2) ? "met" : "NOT met"
      if (("ours-otlp-wait" in med) && ("ours-otlp-queue" in med) && med["ours-otlp-queue"] > 0 && cpu["ours-otlp-queue"] > 0) {
        printf "ours-otlp-wait / ours-otlp-queue  spans/s %.3f   cpu/span %.3f   peak RSS %.3f\n", med["ours-otlp-wait"] / med["ours-otlp-queue"], cpu["ours-otlp-wait"] / cpu["ours-otlp-queue"], rss["ours-otlp-wait"] / rss["ours-otlp-queue"]
        printf "target ours-otlp-wait / ours-otlp-queue spans/s >= 0.9: %s\n", (med["ours-otlp-wait"] / med["ours-otlp-queue"] >= 0.9) ? "met" : "NOT met"
      }
      split("ours-wal-batch ours-wal-interval", ws, " ")
      for (o = 1; o <= 2; o++) {
        w = ws[o]
        if ((w in med) && ("ours" in med) && med["ours"] > 0 && cpu["ours"] > 0)
          printf "%s / ours  spans/s %.3f   cpu/span %.3f   peak RSS %.3f\n", w, med[w] / med["ours"], cpu[w] / cpu["ours"], rss[w] / rss["ours"]
      }
    }' "$TMP/results.$loader.tsv"
done
