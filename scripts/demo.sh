#!/usr/bin/env bash
# The citygw demo: a simulated city → the gateway (Modbus + MQTT) → InfluxDB.
# Installs what is missing (scripts/tools.sh), builds the binaries, starts
# InfluxDB 1.8.10, Mosquitto, firmware-sim and the gateway on loopback, and
# prints where to look. Ctrl-C stops everything. State lives in data/demo/.
#
# Ports (override with the environment): INFLUX_PORT=8086 MQTT_PORT=1883
# ADMIN_PORT=9273 SIM_PORT=8090 DESK_PORT=8091; Modbus 15020..
# (configs/city-demo.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS="${CITYGW_TOOLS:-$HOME/.cache/citygw/bin}"
INFLUX_PORT="${INFLUX_PORT:-8086}"
MQTT_PORT="${MQTT_PORT:-1883}"
ADMIN_PORT="${ADMIN_PORT:-9273}"
SIM_PORT="${SIM_PORT:-8090}"
DESK_PORT="${DESK_PORT:-8091}"
DATA="$ROOT/data/demo"
step() { printf '\033[1m[demo]\033[0m %s\n' "$*"; }

step "1/7 tools"
bash scripts/tools.sh
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

step "2/7 building gateway, firmware-sim, casedesk and rules into bin/"
mkdir -p bin "$DATA"/{influxdb,mosquitto,gateway,logs,desk}
go build -o bin/ ./gateway/cmd/gateway ./firmware-sim/cmd/firmware-sim ./rules/cmd/rules ./caseclient/cmd/casedesk

for p in "$INFLUX_PORT" "$MQTT_PORT" "$ADMIN_PORT" "$SIM_PORT" "$DESK_PORT" 15020; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "port $p on 127.0.0.1 is in use; stop what uses it or set the *_PORT variables" >&2
    exit 1
  fi
done

pids=()
cleanup() {
  step "stopping"
  # In reverse start order, each waited for: the gateway first, so that it
  # flushes to an InfluxDB that is still up.
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

step "3/7 InfluxDB 1.8.10 on 127.0.0.1:$INFLUX_PORT (data in $DATA/influxdb)"
cat > "$DATA/influxdb/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$((INFLUX_PORT + 2))"
[meta]
  dir = "$DATA/influxdb/meta"
[data]
  dir = "$DATA/influxdb/data"
  wal-dir = "$DATA/influxdb/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$INFLUX_PORT"
  flux-enabled = true
  log-enabled = false
[logging]
  level = "warn"
CONF
"$TOOLS/influxd" run -config "$DATA/influxdb/influxdb.conf" >"$DATA/logs/influxd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$INFLUX_PORT/ping" >/dev/null && break; sleep 0.1; done
curl -sf -XPOST "http://127.0.0.1:$INFLUX_PORT/query" --data-urlencode "q=CREATE DATABASE citygw" >/dev/null

step "4/7 Mosquitto on 127.0.0.1:$MQTT_PORT"
cat > "$DATA/mosquitto/mosquitto.conf" <<CONF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $DATA/mosquitto/
max_queued_messages 100000
CONF
"$MOSQUITTO" -c "$DATA/mosquitto/mosquitto.conf" >"$DATA/logs/mosquitto.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$MQTT_PORT") 2>/dev/null && break; sleep 0.1; done

step "5/7 firmware-sim: the demo city (configs/city-demo.yaml), control API on 127.0.0.1:$SIM_PORT"
bin/firmware-sim run -city configs/city-demo.yaml -mqtt "tcp://127.0.0.1:$MQTT_PORT" \
  -control "127.0.0.1:$SIM_PORT" -inventory-out "$DATA/inventory.yaml" >"$DATA/logs/firmware-sim.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q ready "$DATA/logs/firmware-sim.log" && break; sleep 0.1; done
grep ready "$DATA/logs/firmware-sim.log" || { cat "$DATA/logs/firmware-sim.log"; exit 1; }

step "6/7 the reference case desk on 127.0.0.1:$DESK_PORT (Open311 + signed webhook; cases at http://127.0.0.1:$DESK_PORT/)"
# Demo credentials, made once and kept in data/demo/: the gateway reads them
# from the environment (configs/gateway.yaml, cases.secrets), never from its config.
[ -f "$DATA/desk/api.key" ] || head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DATA/desk/api.key"
[ -f "$DATA/desk/webhook.secret" ] || printf 'whsec_%s' "$(head -c 32 /dev/urandom | base64 | tr -d '\n')" > "$DATA/desk/webhook.secret"
export CITYGW_DESK_API_KEY; CITYGW_DESK_API_KEY=$(cat "$DATA/desk/api.key")
export CITYGW_DESK_WEBHOOK_SECRET; CITYGW_DESK_WEBHOOK_SECRET=$(cat "$DATA/desk/webhook.secret")
bin/casedesk -listen "127.0.0.1:$DESK_PORT" -dir "$DATA/desk" -api-key-file "$DATA/desk/api.key" \
  -webhook-secret-file "$DATA/desk/webhook.secret" -citycodes configs/citycodes.yaml >"$DATA/logs/casedesk.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "casedesk ready" "$DATA/logs/casedesk.log" && break; sleep 0.1; done

step "7/7 gateway (configs/gateway.yaml, admin on 127.0.0.1:$ADMIN_PORT)"
sed -e "s#^inventory: .*#inventory: $DATA/inventory.yaml#" \
    -e "s#url: http://127.0.0.1:8086#url: http://127.0.0.1:$INFLUX_PORT#" \
    -e "s#broker: tcp://127.0.0.1:1883#broker: tcp://127.0.0.1:$MQTT_PORT#" \
    -e "s#listen: 127.0.0.1:9273#listen: 127.0.0.1:$ADMIN_PORT#" \
    -e "s#data_dir: .*#data_dir: $DATA/gateway#" \
    -e "s#- rules/#- $ROOT/configs/rules/#" \
    -e "s#codes: citycodes.yaml#codes: $ROOT/configs/citycodes.yaml#" \
    -e "s#127.0.0.1:8091#127.0.0.1:$DESK_PORT#g" \
    configs/gateway.yaml > "$DATA/gateway.yaml"
bin/gateway check -config "$DATA/gateway.yaml"
bin/gateway run -config "$DATA/gateway.yaml" >"$DATA/logs/gateway.log" 2>&1 &
pids+=($!)
sleep 3

cat <<MSG

  The simulated city is running in real time around People's Square,
  Shanghai (lamps follow the real sun there). Where to look:

  The story: inject a gas leak, watch the case appear on the case desk.
    curl -s -XPOST http://127.0.0.1:$SIM_PORT/faults \\
      -d '{"fault":"gas_leak","asset":"GAS-001","for":"5m","params":{"rate_per_min":30}}'
    open http://127.0.0.1:$DESK_PORT/   (the case: codes, place, readings; "cleared" follows the fault's end)
  Other faults (firmware-sim/README.md lists all): bin_fire BIN-0007, bin_overflow BIN-0042,
    lamp_out SL-001-03 (at night in Shanghai), circuit_dead CAB-002-C1 (one case for the cabinet).

  Telemetry in InfluxDB (database citygw):
    curl -sG http://127.0.0.1:$INFLUX_PORT/query --data-urlencode db=citygw \\
      --data-urlencode "q=SELECT last(*) FROM streetlight GROUP BY asset LIMIT 5"
    curl -sG http://127.0.0.1:$INFLUX_PORT/query --data-urlencode db=citygw \\
      --data-urlencode "q=SELECT count(fill_pct) FROM waste_bin WHERE time > now() - 5m"

  Gateway:   http://127.0.0.1:$ADMIN_PORT/metrics   /status   /readyz
  Simulator: http://127.0.0.1:$SIM_PORT/truth   /faults   /stats
  Case desk: http://127.0.0.1:$DESK_PORT/   (Open311 at /services.json, /requests.json)
  Logs: $DATA/logs/   Stop: Ctrl-C
MSG
wait -n "${pids[@]}"
step "a process exited; see $DATA/logs/"
