#!/usr/bin/env bash
# Whole-process comparison of tracemap with rotel (a Rust OTLP collector,
# blackhole exporter): each collector pinned to core 0, `tracemap loadgen`
# pinned to core 1 sending the same pre-encoded 512-span requests, 16 in
# flight, as fast as possible. Reports spans per CPU-second of the collector
# and its peak RSS, then one tracemap run at a fixed rate for its memory.
#
# The X-Ray scenario runs the same load with each collector exporting every
# span to AWS X-Ray (tracemap: exporters.xray; rotel: --exporter aws-xray
# --disable-batching), both pointed at scripts/xray_sink.rs on core 1, a
# PutTraceSegments endpoint that only counts documents and the spans in
# them (subsegments embedded in a segment included); it checks that every
# accepted span was delivered. tracemap runs it twice, with
# `durability: disk` (the default with storage on: the X-Ray path writes
# every document to its disk queue before answering) and `durability:
# memory`; the disk queue may cost at most 10 % (ratio >= 0.90).
#
# The sampled scenario is the X-Ray path with tail sampling on: the same
# load (with loadgen's --error-rate lowered to 0.002, so errors do not
# dominate) against tracemap building the graph only, then exporting to
# the sink with exporters.xray.sampling keeping about 10 % (errors, slow
# edges, the floor, and 5 % of the rest by trace id) and 100 % of the
# traces. Spans per CPU-second count accepted spans (the graph sees them
# all); the sink must receive every kept span.
#
# The forward scenario measures agent mode: a tracemap agent (`mode: agent`,
# forwarding every span to one gateway) on core 0, the gateway and loadgen
# on core 1, alternating with a standalone tracemap on core 0; spans per
# CPU-second of the agent (spans it forwarded, acknowledged by the gateway)
# against the standalone's (spans it accepted).
#
# The memory scenario is issue 15's overload test at full length: a
# tracemap on core 0 with pipeline.memory_limit set BENCH_MEMORY_OVER_IDLE_MIB
# above its idle RSS (history store on, as deployed), and four loadgens on
# core 1 (16 requests in flight each, started a second apart) asking for ten
# times the rate a calibration run sustained, for BENCH_MEMORY_DURATION
# seconds. It samples the collector's RSS every 5 ms, reads the kernel's
# VmHWM, the memory_limit refusals and how long after the load spans are
# taken again. (tests/it/memory_limit.rs is the 15-second CI version.)
#
# Knobs (environment): BENCH_DURATION seconds a run (20), BENCH_REPS runs of
# each collector, alternating (3), BENCH_RATE spans/s of the fixed-rate run
# (100000), BENCH_SCENARIOS, any of graph, xray, sampled, forward, memory
# (graph xray),
# BENCH_MEMORY_DURATION (120), BENCH_MEMORY_OVER_IDLE_MIB (40),
# ROTEL_VERSION (0.0.1a15). Needs cargo, python3 and 2 CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${BENCH_DURATION:-20}
REPS=${BENCH_REPS:-3}
RATE=${BENCH_RATE:-100000}
SCENARIOS=${BENCH_SCENARIOS:-graph xray}
MEMORY_DURATION=${BENCH_MEMORY_DURATION:-120}
MEMORY_OVER_IDLE_MIB=${BENCH_MEMORY_OVER_IDLE_MIB:-40}
ROTEL_VERSION=${ROTEL_VERSION:-0.0.1a15}
RSS_TARGET_MIB=64
SEED=7 # the same pool of requests for every run
VENV=target/bench-venv
TRACEMAP=target/release/tracemap
SINK=target/release/examples/xray_sink
# Static fake credentials for both X-Ray exporters; nothing from the host.
AWS_FAKE=(AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true
  AWS_CONFIG_FILE=/nonexistent AWS_SHARED_CREDENTIALS_FILE=/nonexistent)
ACCEPTED='tracemap_receiver_accepted_spans_total{protocol="grpc"}'
FORWARDED='tracemap_exporter_sent_total{exporter="forward"}'
for scenario in $SCENARIOS; do
  case "$scenario" in graph | xray | sampled | forward | memory) ;;
  *) echo "bench: BENCH_SCENARIOS lists graph, xray, sampled, forward or memory, not $scenario" >&2; exit 2 ;;
  esac
done
has() { case " $SCENARIOS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

PIDS=()
TMP=$(mktemp -d)
cleanup() {
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "checks"
taskset -c 0,1 true 2>/dev/null || die "needs CPUs 0 and 1 for taskset"
command -v python3 >/dev/null || die "needs python3"
CLK_TCK=$(getconf CLK_TCK)

PY=python3
if has graph || has xray || has sampled; then
  step "python venv with rotel $ROTEL_VERSION ($VENV)"
  if [ ! -x "$VENV/bin/python" ]; then
    if ! python3 -m venv "$VENV" 2>/dev/null; then
      apt-get install -y python3-venv >/dev/null
      python3 -m venv "$VENV"
    fi
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "rotel==$ROTEL_VERSION"
  PY="$VENV/bin/python"
  ROTEL=$("$PY" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')
  [ -x "$ROTEL" ] || die "rotel-agent not found at $ROTEL"
  "$ROTEL" --version >&2
fi

step "cargo build --release --bin tracemap --example xray_sink"
cargo build --release --locked --bin tracemap --example xray_sink

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Process-wide user+system CPU in clock ticks (all threads), from /proc/PID/stat.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ printf "%.0f\n", $12 + $13 }'; }

# Nanoseconds the process's threads waited for a CPU: how contended core 0 was.
runq_wait_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $2 } END { printf "%.0f\n", s }'; }

peak_rss_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

metric() { # API_ADDR SERIES
  "$PY" - "$1" "$2" <<'EOF'
import sys, urllib.request
api, series = sys.argv[1], sys.argv[2]
text = urllib.request.urlopen(f"http://{api}/metrics", timeout=5).read().decode()
values = [l.split()[-1] for l in text.splitlines() if l.startswith(series + " ")]
print(values[0] if values else "0")
EOF
}

wait_listening() { # PID HOST PORT: bounded wait for a TCP listener
  for _ in $(seq 1 100); do
    kill -0 "$1" 2>/dev/null || die "collector $1 exited during startup"
    if (exec 3<>"/dev/tcp/$2/$3") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "nothing listens on $2:$3 after 10 s"
}

stop_pid() { # PID: SIGTERM, bounded wait, then SIGKILL
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  # Forget it, so the exit trap never signals a recycled pid.
  local kept=() pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    [ "$pid" = "$1" ] || kept+=("$pid")
  done
  PIDS=(${kept[@]+"${kept[@]}"})
}

# start_sink: the counting PutTraceSegments endpoint on core 1; sets SINK_PID, SINK_URL.
start_sink() {
  local addr=""
  taskset -c 1 "$SINK" 127.0.0.1:0 >"$TMP/sink.out" 2>&1 &
  SINK_PID=$!
  PIDS+=("$SINK_PID")
  for _ in $(seq 1 100); do
    addr=$(sed -n 's/^listening on //p' "$TMP/sink.out")
    [ -n "$addr" ] && break
    kill -0 "$SINK_PID" 2>/dev/null || { cat "$TMP/sink.out" >&2; die "xray_sink exited"; }
    sleep 0.1
  done
  [ -n "$addr" ] || die "xray_sink did not start"
  SINK_URL="http://$addr"
}

sink_count() { # FIELD of the sink's /count
  "$PY" - "$SINK_URL" "$1" <<'EOF'
import json, sys, urllib.request
print(json.load(urllib.request.urlopen(sys.argv[1] + "/count", timeout=5))[sys.argv[2]])
EOF
}

# Waits (at most 15 s) until the sink count holds still for a second, so
# that the collector's export backlog falls inside the measured CPU time.
sink_settle() {
  local last=-1 now stable=0
  for _ in $(seq 1 30); do
    now=$(sink_count spans)
    if [ "$now" = "$last" ]; then
      stable=$((stable + 1))
      [ "$stable" -ge 2 ] && return 0
    else
      stable=0
    fi
    last=$now
    sleep 0.5
  done
}

# launch CORE NAME YAML: tracemap run pinned to CORE with YAML as its
# config; sets LPID, LGRPC and LAPI.
launch() {
  local log="$TMP/$2.log"
  printf '%s' "$3" >"$TMP/$2.yaml"
  taskset -c "$1" env "${AWS_FAKE[@]}" "$TRACEMAP" run --config "$TMP/$2.yaml" \
    --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --api-listen 127.0.0.1:0 \
    --data-dir "$TMP/data-$2" --log-format json 2>"$log" &
  LPID=$!
  PIDS+=("$LPID")
  LGRPC=""
  LAPI=""
  # Port 0 everywhere: read the bound addresses from the "listening" logs.
  for _ in $(seq 1 100); do
    kill -0 "$LPID" 2>/dev/null || { cat "$log" >&2; die "tracemap ($2) exited during startup"; }
    LGRPC=$(grep '"message":"listening"' "$log" | grep '"component":"otlp_grpc"' |
      sed -E 's/.*"addr":"([^"]+)".*/\1/' | head -n 1 || true)
    LAPI=$(grep '"message":"listening"' "$log" | grep '"component":"api"' |
      sed -E 's/.*"addr":"([^"]+)".*/\1/' | head -n 1 || true)
    [ -n "$LGRPC" ] && [ -n "$LAPI" ] && break
    sleep 0.1
  done
  [ -n "$LGRPC" ] && [ -n "$LAPI" ] || die "tracemap ($2) did not report its listeners"
}

# Each start_* sets CPID, ENDPOINT, and COUNTED with API: the series that
# counts the collector's spans, empty to trust loadgen's count.
# start_tracemap [YAML]: with YAML as the config file (default: empty).
start_tracemap() {
  launch 0 tracemap "${1:-}"
  CPID=$LPID API=$LAPI ENDPOINT="http://$LGRPC" COUNTED=$ACCEPTED
}

# The agent on core 0, forwarding to a gateway on core 1 (beside loadgen).
start_agent() {
  launch 1 gateway "mode: gateway"
  GPID=$LPID
  launch 0 agent "mode: agent
exporters:
  forward:
    endpoints: [\"$LGRPC\"]"
  CPID=$LPID API=$LAPI ENDPOINT="http://$LGRPC" COUNTED=$FORWARDED
}

# start_rotel [EXPORTER FLAGS...]: default --exporter blackhole.
start_rotel() {
  local grpc_port http_port
  grpc_port=$(free_port)
  http_port=$(free_port)
  [ $# -gt 0 ] || set -- --exporter blackhole
  API="" COUNTED=""
  taskset -c 0 env "${AWS_FAKE[@]}" "$ROTEL" start "$@" \
    --otlp-grpc-endpoint "127.0.0.1:$grpc_port" --otlp-http-endpoint "127.0.0.1:$http_port" \
    --pid-file "$TMP/rotel.pid" --log-file "$TMP/rotel.log" >"$TMP/rotel.out" 2>&1 &
  CPID=$!
  PIDS+=("$CPID")
  wait_listening "$CPID" 127.0.0.1 "$grpc_port"
  ENDPOINT="http://127.0.0.1:$grpc_port"
}

RESULTS="$TMP/results.tsv"
DELIVERY="$TMP/delivery.tsv"
: >"$RESULTS"
: >"$DELIVERY"
SETTLE=""
CREDIT_ACCEPTED=""
SAMPLED="$TMP/sampled.tsv"
: >"$SAMPLED"

# measure NAME LABEL [LOADGEN FLAGS...]: one loadgen run against the started
# collector; appends a row to $RESULTS. With $SETTLE set (X-Ray runs), it
# runs before the final CPU reading, and the spans credited to the collector
# are those the sink received by then, not those it accepted.
measure() {
  local name=$1 label=$2 cpu0 cpu1 wait0 wait1 acc0=0 acc1=0 rss lg delivered=-
  shift 2
  sleep 1 # let startup work settle before the CPU baseline
  cpu0=$(cpu_ticks "$CPID")
  wait0=$(runq_wait_ns "$CPID")
  [ -n "$COUNTED" ] && acc0=$(metric "$API" "$COUNTED")
  local TIMEFORMAT='%U %S'
  if ! { time taskset -c 1 "$TRACEMAP" loadgen --endpoint "$ENDPOINT" \
    --batch-size 512 --concurrency 16 --duration "${DURATION}s" --seed "$SEED" \
    --format json "$@" >"$TMP/loadgen.json" 2>"$TMP/loadgen.err"; } 2>"$TMP/loadgen.time"; then
    cat "$TMP/loadgen.err" >&2
    die "loadgen failed against $name"
  fi
  tail -n 3 "$TMP/loadgen.err" >&2
  sleep 1 # the collector finishes what it queued
  if [ -n "$SETTLE" ]; then
    "$SETTLE"
    [ -z "$CREDIT_ACCEPTED" ] && delivered=$(sink_count spans)
  fi
  cpu1=$(cpu_ticks "$CPID")
  wait1=$(runq_wait_ns "$CPID")
  rss=$(peak_rss_kib "$CPID")
  [ -n "$COUNTED" ] && acc1=$(metric "$API" "$COUNTED")
  stop_pid "$CPID"
  lg=$(cat "$TMP/loadgen.json")
  "$PY" - "$name" "$label" "$cpu0" "$cpu1" "$CLK_TCK" "$acc0" "$acc1" "$rss" "$wait0" "$wait1" \
    "$(cat "$TMP/loadgen.time")" "$lg" "$delivered" "$COUNTED" >>"$RESULTS" <<'EOF'
import json, sys
name, label, cpu0, cpu1, tck, acc0, acc1, rss, wait0, wait1, lg_time, lg, delivered, counted = sys.argv[1:]
lg = json.loads(lg)
cpu = (int(cpu1) - int(cpu0)) / int(tck)
# tracemap counts its own spans (accepted, or forwarded by an agent); for
# rotel, trust loadgen's OK count.
accepted = float(acc1) - float(acc0) if counted else lg["spans_sent"]
spans = accepted if delivered == "-" else float(delivered)
lg_cpu = sum(float(x) for x in lg_time.split())
errors = ",".join(f"{k}={v}" for k, v in lg["errors"].items()) or "-"
print("\t".join(str(x) for x in [
    name, label, int(spans), lg["spans_sent"], f"{cpu:.2f}", f"{lg['duration_s']:.2f}",
    int(rss), f"{(int(wait1) - int(wait0)) / 1e9:.2f}", f"{lg_cpu:.2f}", f"{lg['latency_ms']['p50']:.2f}", f"{lg['latency_ms']['p99']:.2f}",
    errors, int(accepted)]))
EOF
}

# measure_xray NAME LABEL: measure with the sink settled, then record what
# the sink received against what the collector accepted.
measure_xray() {
  SETTLE=sink_settle
  measure "$1" "$2"
  SETTLE=""
  # The collector has exited (after its shutdown flush): the count is final.
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$(tail -n 1 "$RESULTS" | cut -f13)" \
    "$(sink_count spans)" "$(sink_count bad_requests)" "$(sink_count segments)" >>"$DELIVERY"
  stop_pid "$SINK_PID"
}

if has graph; then
  for rep in $(seq 1 "$REPS"); do
    step "run $rep/$REPS: tracemap, max rate, ${DURATION}s"
    start_tracemap
    measure tracemap "max#$rep"
    step "run $rep/$REPS: rotel, max rate, ${DURATION}s"
    start_rotel
    measure rotel "max#$rep"
  done

  step "tracemap at a fixed $RATE spans/s, ${DURATION}s"
  start_tracemap
  measure tracemap "rate$RATE" --rate "$RATE"
fi

if has xray; then
  for rep in $(seq 1 "$REPS"); do
    step "run $rep/$REPS: tracemap exporting to X-Ray (the sink), max rate, ${DURATION}s"
    start_sink
    start_tracemap "$(printf 'exporters:\n  xray:\n    enabled: true\n    region: us-east-1\n    endpoint: %s\n    durability: disk\n' "$SINK_URL")"
    measure_xray tracemap-xray "max#$rep"
    step "run $rep/$REPS: tracemap exporting to X-Ray, durability: memory, max rate, ${DURATION}s"
    start_sink
    start_tracemap "$(printf 'exporters:\n  xray:\n    enabled: true\n    region: us-east-1\n    endpoint: %s\n    durability: memory\n' "$SINK_URL")"
    measure_xray tracemap-xray-memory "max#$rep"
    step "run $rep/$REPS: rotel exporting to X-Ray (the sink), max rate, ${DURATION}s"
    start_sink
    start_rotel --exporter aws-xray --disable-batching \
      --xray-exporter-region us-east-1 --xray-exporter-custom-endpoint "$SINK_URL"
    measure_xray rotel-xray "max#$rep"
  done
fi

# sampled_settle: waits (at most 30 s) until no trace waits for its
# decision, then for the sink; records kept and dropped spans.
sampled_settle() {
  for _ in $(seq 1 60); do
    [ "$(metric "$API" tracemap_sampling_traces_held)" = "0" ] && break
    sleep 0.5
  done
  sink_settle
  printf '%s\t%s\t%s\t%s\n' "$CURRENT" "$(metric "$API" 'tracemap_sampling_spans_total{decision="kept"}')" \
    "$(metric "$API" 'tracemap_sampling_spans_total{decision="dropped"}')" "$(sink_count spans)" >>"$SAMPLED"
}

# sampling_yaml RATE: X-Ray to the sink, sampling on, RATE of the traces
# no policy keeps kept by the rules' default.
sampling_yaml() {
  printf '{"version": 2, "rules": [], "default": {"fixed_target": 0, "rate": %s}}' "$1" >"$TMP/rules-$1.json"
  printf 'exporters:\n  xray:\n    enabled: true\n    region: us-east-1\n    endpoint: %s\n    sampling:\n      enabled: true\n      max_traces_per_second: 0\n      rules_file: %s\n' \
    "$SINK_URL" "$TMP/rules-$1.json"
}

if has sampled; then
  for rep in $(seq 1 "$REPS"); do
    step "run $rep/$REPS: tracemap, graph only, --error-rate 0.002, max rate, ${DURATION}s"
    start_tracemap
    measure tracemap-graph "max#$rep" --error-rate 0.002
    for rate in 0.05 1.0; do
      step "run $rep/$REPS: tracemap sampling for X-Ray (default rate $rate), max rate, ${DURATION}s"
      start_sink
      start_tracemap "$(sampling_yaml "$rate")"
      CURRENT="tracemap-sampled-$rate max#$rep" SETTLE=sampled_settle CREDIT_ACCEPTED=1
      measure "tracemap-sampled-$rate" "max#$rep" --error-rate 0.002
      SETTLE="" CREDIT_ACCEPTED=""
      stop_pid "$SINK_PID"
    done
  done
fi

if has forward; then
  for rep in $(seq 1 "$REPS"); do
    if ! has graph; then
      step "run $rep/$REPS: tracemap, max rate, ${DURATION}s"
      start_tracemap
      measure tracemap "max#$rep"
    fi
    step "run $rep/$REPS: agent forwarding to a gateway, max rate, ${DURATION}s"
    start_agent
    measure agent "max#$rep"
    stop_pid "$GPID"
  done
  step "agent at a fixed $RATE spans/s, ${DURATION}s"
  start_agent
  measure agent "rate$RATE" --rate "$RATE"
  stop_pid "$GPID"
fi

MEMORY="$TMP/memory.txt"
: >"$MEMORY"
if has memory; then
  step "memory: calibration (idle RSS, the rate sustained with 4 requests in flight)"
  start_tracemap
  sleep 1
  idle_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$CPID/status")
  taskset -c 1 "$TRACEMAP" loadgen --endpoint "$ENDPOINT" --concurrency 4 --duration 5s \
    --seed "$SEED" --format json >"$TMP/calibrate.json" 2>/dev/null || die "calibration loadgen failed"
  sustained=$("$PY" -c 'import json, sys; print(int(json.load(open(sys.argv[1]))["spans_per_sec"]))' "$TMP/calibrate.json")
  stop_pid "$CPID"
  limit=$(((idle_kib + MEMORY_OVER_IDLE_MIB * 1024) * 1024))
  step "memory: limit $((limit / 1048576)) MiB (idle $((idle_kib / 1024)) MiB + $MEMORY_OVER_IDLE_MIB), 4 loadgens at 10 x $sustained spans/s for ${MEMORY_DURATION}s"
  start_tracemap "$(printf 'pipeline:\n  memory_limit: %s\n' "$limit")"
  # RSS every 5 ms until the stop file appears (at most the run plus 5 minutes).
  "$PY" - "$CPID" "$TMP/rss.stop" "$((MEMORY_DURATION + 300))" >"$TMP/rss.peak" <<'EOF' &
import os, sys, time
pid, stop, until = sys.argv[1], sys.argv[2], time.time() + float(sys.argv[3])
peak = 0
while not os.path.exists(stop) and time.time() < until:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                peak = max(peak, int(line.split()[1]))
    except OSError:
        break
    time.sleep(0.005)
print(peak)
EOF
  SAMPLER=$!
  PIDS+=("$SAMPLER")
  LOADS=()
  for index in 1 2 3 4; do
    taskset -c 1 "$TRACEMAP" loadgen --endpoint "$ENDPOINT" --rate $((sustained * 10 / 4)) \
      --concurrency 16 --duration "${MEMORY_DURATION}s" --seed "$((SEED + index))" \
      --format json >"$TMP/overload$index.json" 2>/dev/null &
    LOADS+=("$!")
    PIDS+=("$!")
    sleep 1
  done
  for pid in "${LOADS[@]}"; do wait "$pid" || die "an overload loadgen failed"; done
  ended=$(date +%s.%N)
  # Recovery: one 512-span request (loadgen retries UNAVAILABLE itself),
  # again until it is taken, at most 30 times.
  recovered=""
  for _ in $(seq 1 30); do
    if "$TRACEMAP" loadgen --endpoint "$ENDPOINT" --max-spans 512 --concurrency 1 --duration 10s \
      --format json 2>/dev/null | "$PY" -c 'import json, sys; sys.exit(json.load(sys.stdin)["requests_ok"] != 1)'; then
      recovered=$("$PY" -c "import time; print(f'{time.time() - $ended:.1f}')")
      break
    fi
  done
  : >"$TMP/rss.stop"
  wait "$SAMPLER" || true
  hwm_kib=$(peak_rss_kib "$CPID")
  refused_spans=$(metric "$API" 'tracemap_receiver_refused_spans_total{protocol="grpc",reason="memory_limit"}')
  refused_requests=$(metric "$API" 'tracemap_receiver_refused_requests_total{protocol="grpc",reason="memory_limit"}')
  evicted=$(metric "$API" tracemap_memory_evicted_halves_total)
  accepted=$(metric "$API" "$ACCEPTED")
  stop_pid "$CPID"
  "$PY" - "$idle_kib" "$limit" "$(cat "$TMP/rss.peak")" "$hwm_kib" "$sustained" "$MEMORY_DURATION" \
    "$refused_spans" "$refused_requests" "$evicted" "$accepted" "${recovered:-never}" \
    "$TMP"/overload*.json >"$MEMORY" <<'EOF'
import json, sys
idle, limit, sampled, hwm, sustained, duration, rs, rr, evicted, accepted, recovered = sys.argv[1:12]
peak = max(int(sampled), int(hwm)) * 1024
limit = int(limit)
unavailable = sum(json.load(open(f))["errors"].get("UNAVAILABLE", 0) for f in sys.argv[12:])
print(f"memory limit, {duration}s at 10 x {int(sustained):,} spans/s: idle {int(idle) / 1024:.1f} MiB, "
      f"limit {limit / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB (sampled {int(sampled) / 1024:.1f}, "
      f"VmHWM {int(hwm) / 1024:.1f}): {'UNDER' if peak < limit else 'OVER'} the limit")
print(f"  accepted {float(accepted):,.0f} spans; refused for memory: {float(rs):,.0f} spans and "
      f"{float(rr):,.0f} requests (loadgens saw {unavailable:,} UNAVAILABLE); "
      f"{float(evicted):,.0f} halves evicted; spans taken again {recovered} s after the load stopped")
EOF
fi

step "results (collector on core 0, loadgen on core 1; load: $(cut -d' ' -f1-3 /proc/loadavg))"
"$PY" - "$RESULTS" "$RSS_TARGET_MIB" "$DELIVERY" "$SAMPLED" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
target = float(sys.argv[2])
delivery = [l.rstrip("\n").split("\t") for l in open(sys.argv[3]) if l.strip()]
head = ["collector", "run", "spans", "loadgen ok", "cpu s", "spans/cpu-s",
        "cpu %", "runq wait %", "peak rss MiB", "loadgen cpu %", "p50 ms", "p99 ms", "errors"]
table = []
per = {}
for name, label, spans, lg_ok, cpu, dur, rss, wait, lg_cpu, p50, p99, errors, _accepted in rows:
    spans, cpu, dur = int(spans), float(cpu), float(dur)
    eff = spans / cpu if cpu > 0 else float("nan")
    rss_mib = int(rss) / 1024
    table.append([name, label, spans, lg_ok, f"{cpu:.2f}", f"{eff:,.0f}",
                  f"{100 * cpu / dur:.0f}", f"{100 * float(wait) / dur:.0f}", f"{rss_mib:.1f}", f"{100 * float(lg_cpu) / dur:.0f}",
                  p50, p99, errors])
    if label.startswith("max"):
        per.setdefault(name, []).append((eff, rss_mib, spans / dur))
widths = [max(len(str(r[i])) for r in table + [head]) for i in range(len(head))]
for r in [head] + table:
    print("  ".join(str(c).rjust(w) for c, w in zip(r, widths)))
print("(spans: accepted, or for *-xray runs delivered to the sink before the final CPU reading;"
      " runq wait %: time the collector was runnable but core 0 ran something else;"
      " high values mean a busy machine, not a slow collector)")
print()
for name, runs in per.items():
    print(f"{name:>9}: median {statistics.median(e for e, _, _ in runs):,.0f} spans/cpu-s, "
          f"median {statistics.median(t for _, _, t in runs):,.0f} spans/s, "
          f"peak rss {max(r for _, r, _ in runs):.1f} MiB")
for ours, theirs in [("tracemap", "rotel"), ("tracemap-xray", "rotel-xray"),
                     ("tracemap-xray", "tracemap-xray-memory"),
                     ("tracemap-sampled-0.05", "tracemap-graph"),
                     ("tracemap-sampled-1.0", "tracemap-graph"),
                     ("tracemap-sampled-1.0", "rotel-xray")]:
    if ours in per and theirs in per:
        ratio = statistics.median(e for e, _, _ in per[ours]) / statistics.median(
            e for e, _, _ in per[theirs])
        print(f"    ratio: {ours}/{theirs} spans per cpu-second = {ratio:.2f}")
if "tracemap" in per and "agent" in per:
    agent = statistics.median(e for e, _, _ in per["agent"])
    standalone = statistics.median(e for e, _, _ in per["tracemap"])
    print(f"    forwarding: the agent spends {1e9 / agent:,.0f} ns of CPU a span "
          f"({agent:,.0f} spans/cpu-s), the standalone collector {1e9 / standalone:,.0f} ns")
for name, label, accepted, delivered, bad, documents in delivery:
    lost = int(accepted) - int(delivered)
    verdict = ("all delivered" if lost == 0 else
               f"{lost:,} NOT delivered" if lost > 0 else f"{-lost:,} extra (duplicates)")
    print(f"x-ray delivery, {name} {label}: accepted {int(accepted):,}, the sink received"
          f" {int(delivered):,} spans in {int(documents):,} documents ({bad} bad requests): {verdict}")
for line in open(sys.argv[4]):
    run, kept, dropped, received = line.rstrip("\n").split("\t")
    kept, dropped, received = float(kept), float(dropped), float(received)
    share = kept / (kept + dropped) if kept + dropped else float("nan")
    verdict = "all kept spans delivered" if received >= kept else f"{kept - received:,.0f} kept spans NOT delivered"
    print(f"sampling, {run}: kept {kept:,.0f} of {kept + dropped:,.0f} spans ({100 * share:.1f} %),"
          f" the sink received {received:,.0f}: {verdict}")
fixed = [r for r in table if r[1].startswith("rate")]
for r in fixed:
    verdict = "within" if float(r[8]) <= target else "OVER"
    print(f"fixed rate ({r[1][4:]} spans/s): peak rss {r[8]} MiB, {verdict} the {target:.0f} MiB target, "
          f"{r[6]}% of a core")
EOF
cat "$MEMORY"
