#!/usr/bin/env bash
# fleet.sh rolls a version across simulated fleets (fake nodes whose reboot
# takes 100 ms, run by the real agent, one etcd client each) on one real
# etcd started here on loopback with its own data directory, max-rebooting
# 10, and prints a table: makespan against the ideal (ceil(N/M) median
# holds of the same run; the hold is printed), the most places held at one
# etcd revision, etcd requests and raft writes per node, CPU of the agents
# and of etcd, and how long after the desired version was set the first
# node drained. See TestBench in pkg/fleet.
#
# Each size runs RUNS times, each on a fresh etcd; the row shown is the run
# with the median ratio, and "ratios" lists all of them, so that the noise
# of a shared machine shows instead of being picked from.
#
#	bench/fleet.sh [NODES...]     default: 50 200 1000
#	RUNS=3 TIMEOUT=5m bench/fleet.sh   runs per size, cap on one rollout
#
# Run it under flock /tmp/abboot-heavy.lock on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
etcd=${ETCD:-/usr/bin/etcd}
[ -x "$etcd" ] || { echo "fleet.sh: $etcd is missing (apt-get install etcd-server)" >&2; exit 1; }
tmp=$(mktemp -d)
pid=
cleanup() {
	[ -z "$pid" ] || { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; }
	rm -rf "$tmp"
}
trap cleanup EXIT
go test -c -o "$tmp/fleet.test" ./pkg/fleet/

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

echo "| nodes | M | makespan | hold | ideal | ratio | max held | requests/node | writes/node | agents CPU | etcd CPU | first drain | ratios |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
sizes=("$@")
[ $# -gt 0 ] || sizes=(50 200 1000)
# run N prints one row of TestBench's table for N nodes on a fresh etcd.
run() {
	local n=$1 client peer
	client=http://127.0.0.1:$(port) peer=http://127.0.0.1:$(port)
	rm -rf "$tmp/etcd"
	"$etcd" --name bench --data-dir "$tmp/etcd" \
		--listen-client-urls "$client" --advertise-client-urls "$client" \
		--listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
		--initial-cluster "bench=$peer" --logger zap --log-level error 2>"$tmp/etcd.log" &
	pid=$!
	for _ in $(seq 100); do curl -sf "$client/health" >/dev/null && break; sleep 0.1; done
	(cd pkg/fleet && ABBOOT_FLEET_BENCH_ETCD=$client ABBOOT_FLEET_BENCH_NODES=$n \
		ABBOOT_FLEET_BENCH_TIMEOUT=${TIMEOUT:-5m} "$tmp/fleet.test" -test.run '^TestBench$' -test.timeout 30m |
		grep "^|" || echo "| $n | 10 | bench failed | | | |")
	kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
}
for n in "${sizes[@]}"; do
	for _ in $(seq "${RUNS:-3}"); do run "$n"; done >"$tmp/rows"
	sort -t'|' -k7,7g -o "$tmp/rows" "$tmp/rows"
	ratios=$(cut -d'|' -f7 "$tmp/rows" | tr -d ' ' | paste -sd' ')
	echo "$(sed -n "$((($(wc -l <"$tmp/rows") + 1) / 2))p" "$tmp/rows") $ratios |"
done
