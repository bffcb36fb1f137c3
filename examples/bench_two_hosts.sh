#!/bin/sh
# The scaling model's check (docs/parallel.md): `lstm-lm bench --preset small` on P = 2 processes
# of this machine, then across two test hosts made of network namespaces (their own host
# names, a veth link limited to 1 Gb/s by tbf, addresses from 192.0.2.0/24 inside the
# namespaces only), MPI held to TCP. Needs root, iproute2 and the mpi extra; run from the
# venv where lstm-lm is installed. Each process computes on one BLAS thread in both cases.
set -eu
BIN=$(dirname "$(command -v lstm-lm)")
LAUNCH=$(mktemp)
trap 'ip netns del lmbenchA 2>/dev/null; ip netns del lmbenchB 2>/dev/null; rm -f "$LAUNCH"' EXIT
ip netns add lmbenchA
ip netns add lmbenchB
ip link add lmbenchA type veth peer name lmbenchB
for n in lmbenchA lmbenchB; do ip link set $n netns $n; done
ip -n lmbenchA addr add 192.0.2.1/24 dev lmbenchA
ip -n lmbenchB addr add 192.0.2.2/24 dev lmbenchB
for n in lmbenchA lmbenchB; do
  ip -n $n link set $n up
  ip -n $n link set lo up
  ip netns exec $n tc qdisc add dev $n root tbf rate 1gbit burst 256kb latency 50ms
done
# hydra's ssh launcher runs: SCRIPT [OPTIONS] HOST COMMAND...; this one enters HOST's namespace
cat > "$LAUNCH" <<'X'
#!/bin/sh
while [ "${1#-}" != "$1" ]; do shift; done
case $1 in 192.0.2.1) ns=lmbenchA ;; *) ns=lmbenchB ;; esac
shift
exec ip netns exec "$ns" unshare --uts sh -c "hostname $ns; $*"
X
chmod +x "$LAUNCH"
export OPENBLAS_NUM_THREADS=1 UCX_TLS=tcp FI_PROVIDER=tcp
echo "P = 2 on this machine:"
"$BIN/lstm-lm" bench --preset small --procs 2 --json
echo "P = 2 across two hosts, 1 Gb/s:"
ip netns exec lmbenchA unshare --uts sh -c "hostname lmbenchA; exec $BIN/mpiexec \
  -hosts 192.0.2.1,192.0.2.2 -ppn 1 -launcher ssh -launcher-exec $LAUNCH -n 2 \
  $BIN/lstm-lm bench --preset small --json"
