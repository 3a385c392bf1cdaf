#!/usr/bin/env bash
# The etcd side of `TLS=1 tests/bench/compare.sh`: the same 3-member etcd 3.4 cluster and
# closed-loop Go clientv3 load generator as ../shared/bench/etcd-compare.sh (whose files it
# uses, unchanged), but every connection in TLS as raftd's `local up --tls` runs it:
# peers in mutual TLS (--peer-cert-file, --peer-key-file, --peer-trusted-ca-file,
# --peer-client-cert-auth), clients must present a certificate (--cert-file, --key-file,
# --trusted-ca-file, --client-cert-auth). Keys are ECDSA P-256, as rcgen makes raftd's.
# The load generator is etcd-loadgen.go with a TLS configuration added to its
# clientv3.Config (a copy patched here; the shared file is not touched).
#
# Usage: CLIENTS="1 256" DUR=10 VALUE=128 ETCD_COMPARE=/path/to/etcd-compare.sh etcd-tls.sh
# Prints the same lines as etcd-compare.sh, labelled etcd-3-tls.
set -euo pipefail
ROOT="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
ETCD_COMPARE=${ETCD_COMPARE:-$ROOT/../shared/bench/etcd-compare.sh}
SHARED=$(dirname "$ETCD_COMPARE")
TMP=${BENCH_TMP:-/tmp/etcd-tls}
DUR=${DUR:-15}
CLIENTS=${CLIENTS:-"1 16 64 256"}
VALUE=${VALUE:-128}
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap cleanup EXIT INT TERM

need=()
for b in etcd:etcd-server etcdctl:etcd-client go:golang-go openssl:openssl; do
  command -v "${b%%:*}" >/dev/null || need+=("${b##*:}")
done
[ -d /usr/share/gocode/src/go.etcd.io/etcd/clientv3 ] || need+=(golang-etcd-server-dev)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

# Certificates: a CA, one member certificate naming 127.0.0.1 (every member listens there),
# one client certificate.
CERTS=$TMP/certs
rm -rf "$CERTS"; mkdir -p "$CERTS"
ec() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "$@" 2>/dev/null; }
ec -x509 -keyout "$CERTS/ca-key.pem" -out "$CERTS/ca.pem" -days 2 -subj /CN=etcd-bench-ca
leaf() { # NAME EXTENSIONS
  ec -keyout "$CERTS/$1-key.pem" -out "$CERTS/$1.csr" -subj "/CN=$1"
  openssl x509 -req -in "$CERTS/$1.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca-key.pem" \
    -CAcreateserial -out "$CERTS/$1.pem" -days 2 -extfile <(printf '%s\n' "$2") 2>/dev/null
}
leaf member $'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth'
leaf client 'extendedKeyUsage=clientAuth'

# The load generator with TLS: etcd-loadgen.go plus a TLS configuration from the environment.
mkdir -p "$TMP/loadgen"
LG=$TMP/etcd-loadgen-tls
sed -e 's|"go.etcd.io/etcd/clientv3"|"go.etcd.io/etcd/clientv3"\n\t"go.etcd.io/etcd/pkg/transport"|' \
  -e 's|DialTimeout: 5 \* time.Second}|DialTimeout: 5 * time.Second, TLS: benchTLS()}|' \
  "$SHARED/etcd-loadgen.go" >"$TMP/loadgen/main.go"
grep -q 'TLS: benchTLS()' "$TMP/loadgen/main.go" || { echo "etcd-tls.sh: cannot patch the load generator" >&2; exit 1; }
cat >>"$TMP/loadgen/main.go" <<'EOF'

// benchTLS: the client certificate and CA of ETCD_TLS_DIR (added by etcd-tls.sh).
func benchTLS() *tls.Config {
	dir := os.Getenv("ETCD_TLS_DIR")
	info := transport.TLSInfo{CertFile: dir + "/client.pem", KeyFile: dir + "/client-key.pem", TrustedCAFile: dir + "/ca.pem"}
	c, err := info.ClientConfig()
	if err != nil {
		panic(err)
	}
	return c
}
EOF
sed -i 's|^import (|import (\n\t"crypto/tls"\n\t"os"|' "$TMP/loadgen/main.go"
(cd "$TMP/loadgen" && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=$TMP/gocache GOFLAGS= go build -o "$LG" .)
export ETCD_TLS_DIR=$CERTS ETCDCTL_API=3

rm -rf "$TMP/data"; mkdir -p "$TMP/data"
cluster="" EPS=""
for i in 1 2 3; do cluster+="${cluster:+,}m$i=https://127.0.0.1:$((24800 + i))"; done
for i in 1 2 3; do
  cp=$((24790 + i)) pp=$((24800 + i))
  etcd --name "m$i" --data-dir "$TMP/data/m$i" \
    --listen-client-urls "https://127.0.0.1:$cp" --advertise-client-urls "https://127.0.0.1:$cp" \
    --listen-peer-urls "https://127.0.0.1:$pp" --initial-advertise-peer-urls "https://127.0.0.1:$pp" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "tls-$$" \
    --cert-file "$CERTS/member.pem" --key-file "$CERTS/member-key.pem" \
    --trusted-ca-file "$CERTS/ca.pem" --client-cert-auth \
    --peer-cert-file "$CERTS/member.pem" --peer-key-file "$CERTS/member-key.pem" \
    --peer-trusted-ca-file "$CERTS/ca.pem" --peer-client-cert-auth \
    --logger zap --log-outputs "$TMP/data/m$i.log" >"$TMP/data/m$i.out" 2>&1 &
  PIDS+=($!)
  EPS+="${EPS:+,}127.0.0.1:$cp"
done
ctl() {
  etcdctl --endpoints="$(sed 's|127|https://127|g' <<<"$EPS")" --cacert "$CERTS/ca.pem" \
    --cert "$CERTS/client.pem" --key "$CERTS/client-key.pem" "$@"
}
for _ in $(seq 1 60); do ctl endpoint health >/dev/null 2>&1 && break; sleep 0.5; done
ctl endpoint health >/dev/null 2>&1 || { echo "etcd-tls.sh: etcd did not come up (see $TMP/data)" >&2; exit 1; }
for c in $CLIENTS; do
  "$LG" -endpoints "$EPS" -clients "$c" -duration "${DUR}s" -value-size "$VALUE" -mode write \
    -label "etcd-3-tls"
done
for p in "${PIDS[@]}"; do
  echo "etcd pid $p rss_kb=$(awk '/VmRSS/{print $2}' /proc/$p/status 2>/dev/null || echo ?)"
done
