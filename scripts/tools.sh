#!/usr/bin/env bash
# Installs what citygw's demo and tests run against, if missing:
#   - Mosquitto (broker + clients), mbpoll (Modbus client), python3-pymodbus
#     (Modbus server) and socat (serial pty pairs for RTU tests) from Debian's apt;
#   - InfluxDB 1.8.10 built from its Go module into $CITYGW_TOOLS
#     (default ~/.cache/citygw/bin), about a minute, cached afterwards;
#   - only when asked (`bash scripts/tools.sh bench` or CITYGW_TOOLS_BENCH=1):
#     Telegraf v1.37.2 built from its Go module into the same directory, for
#     the city benchmark (gateway/cmd/citybench). It takes many minutes and
#     gigabytes of module downloads, so `make test` and CI never build it.
# Safe to run again: it only installs what is not there.
set -euo pipefail
TOOLS="${CITYGW_TOOLS:-$HOME/.cache/citygw/bin}"
mkdir -p "$TOOLS"

step() { printf '\033[1m[tools]\033[0m %s\n' "$*"; }

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
command -v mbpoll >/dev/null 2>&1 || need_apt+=(mbpoll)
command -v socat >/dev/null 2>&1 || need_apt+=(socat)   # pty pairs for the Modbus RTU tests
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)   # headless browser for the status page tests (gateway/statuspage)
/usr/bin/python3 -c 'import pymodbus' >/dev/null 2>&1 || need_apt+=(python3-pymodbus)
if [ "${#need_apt[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  step "apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
else
  step "mosquitto, mbpoll, pymodbus, socat: present"
fi

# go install leaves no version in the binary ("vunknown"): a stamp file records it.
if [ -x "$TOOLS/influxd" ] && grep -qx 'v1.8.10' "$TOOLS/influxd.version" 2>/dev/null; then
  step "influxd 1.8.10: present in $TOOLS"
else
  step "building influxd 1.8.10 from its Go module into $TOOLS (about a minute, once)"
  GOBIN="$TOOLS" GOFLAGS=-buildvcs=false go install github.com/influxdata/influxdb/cmd/influxd@v1.8.10
  echo v1.8.10 > "$TOOLS/influxd.version"
fi

# Telegraf for the city benchmark, only on request.
TELEGRAF_VERSION=v1.37.2
if [ "${1:-}" = "bench" ] || [ "${CITYGW_TOOLS_BENCH:-}" = "1" ]; then
  if [ -x "$TOOLS/telegraf" ] && grep -qx "$TELEGRAF_VERSION" "$TOOLS/telegraf.version" 2>/dev/null; then
    step "telegraf ${TELEGRAF_VERSION#v}: present in $TOOLS"
  else
    step "building telegraf ${TELEGRAF_VERSION#v} from its Go module into $TOOLS (many minutes, once)"
    GOBIN="$TOOLS" GOFLAGS=-buildvcs=false go install "github.com/influxdata/telegraf/cmd/telegraf@$TELEGRAF_VERSION"
    echo "$TELEGRAF_VERSION" > "$TOOLS/telegraf.version"
  fi
fi
step "ready: $(command -v mosquitto || echo /usr/sbin/mosquitto), $TOOLS/influxd$([ -x "$TOOLS/telegraf" ] && echo ", $TOOLS/telegraf")"
