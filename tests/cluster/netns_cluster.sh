#!/usr/bin/env bash
# netns_cluster.sh - an emulated multi-node cluster on one machine (docs/scaling.md): N
# network namespaces as nodes, each joined to a Linux bridge (the switch) by a veth pair whose
# two ends are rate-limited by tc tbf (the node's link, both directions). Open MPI runs across
# them over TCP, with a small agent script standing in for ssh (`ip netns exec NODE ...`).
#
#   netns_cluster.sh run N RATE -- CMD...   bring up N nodes at RATE (tc syntax: 200mbit),
#                                           run CMD with the cluster's variables exported,
#                                           tear everything down on exit, even after a failure
#   netns_cluster.sh up DIR N RATE          bring up, recording what it made in DIR
#   netns_cluster.sh down DIR               remove what DIR records: processes in the
#                                           namespaces, veths, namespaces, bridge
#   netns_cluster.sh rate DIR RATE          change every link's rate
#   netns_cluster.sh link DIR I up|down     take node I's link (1-based) down or up
#   netns_cluster.sh mpirun DIR NP ARGS...  mpirun from node 1 with NP ranks, one per node
#                                           in turn, over TCP on the emulated network only
#
# CMD sees GT_CLUSTER_DIR, GT_CLUSTER_NODES, GT_CLUSTER_RATE and GT_CLUSTER (this script).
# Addresses exist only inside the namespaces (10.X.Y.I/24, a /24 not routed here); the bridge
# has none. Needs root, iproute2 and tc; delay cannot be emulated (no netem), only bandwidth.
set -euo pipefail
SELF=$(readlink -f "$0")

die() { echo "netns_cluster.sh: error: $*" >&2; exit 2; }

# tbf: burst >= 2 ms at the rate (and >= 64 KB, a GSO packet) so high rates are reachable;
# the queue holds 50 ms of traffic before dropping (TCP then slows down, as on a real link).
tbf() {  # tbf add|change DEV RATE [NS]
    local op=$1 dev=$2 rate=$3 ns=${4:-} bits
    bits=$(rate_bits "$rate")
    local burst=$((bits / 8 / 500)); [ "$burst" -lt 65536 ] && burst=65536
    if [ -n "$ns" ]; then
        ip netns exec "$ns" tc qdisc "$op" dev "$dev" root tbf rate "$rate" burst "$burst" latency 50ms
    else
        tc qdisc "$op" dev "$dev" root tbf rate "$rate" burst "$burst" latency 50ms
    fi
}

rate_bits() {  # 200mbit -> 200000000
    local r=${1,,} n u
    n=${r%%[a-z]*}; u=${r#"$n"}
    case $u in
        gbit) echo $((n * 1000000000)) ;; mbit) echo $((n * 1000000)) ;; kbit) echo $((n * 1000)) ;;
        bit|"") echo "$n" ;; *) die "rate '$1': use NNkbit, NNmbit or NNgbit" ;;
    esac
}

up() {
    local dir=$1 n=$2 rate=$3
    [ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
    [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 200 ] || die "N '$n': between 1 and 200 nodes"
    rate_bits "$rate" >/dev/null
    mkdir -p "$dir"
    # A name and a /24 of our own: the pid keeps concurrent clusters apart.
    local id=$(($$ % 100000)) a b
    a=$((201 + id % 50)); b=$((id / 50 % 250))
    local net="10.$a.$b"
    if ip -4 addr | grep -q " $net\."; then die "$net.0/24 is in use here"; fi
    local br="gtb$id"
    echo "$id" >"$dir/id"
    : >"$dir/nodes"
    ip link add "$br" type bridge
    echo "bridge $br" >>"$dir/made"
    ip link set "$br" up
    for i in $(seq 1 "$n"); do
        local ns="gtn$id-$i" v="gtv$id-$i"
        ip netns add "$ns"
        echo "netns $ns" >>"$dir/made"
        ip link add "$v" type veth peer name eth0 netns "$ns"
        echo "veth $v" >>"$dir/made"
        ip link set "$v" master "$br" up
        ip -n "$ns" addr add "$net.$i/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
        tbf add eth0 "$rate" "$ns"   # uplink: what the node sends
        tbf add "$v" "$rate"         # downlink: what the switch sends to the node
        echo "$net.$i $ns $v" >>"$dir/nodes"
    done
    echo "$net.0/24" >"$dir/net"
    echo "$rate" >"$dir/rate"
    awk '{print $1 " slots=1"}' "$dir/nodes" >"$dir/hosts"
    # ssh's stand-in: the host's namespace runs the command (mpirun passes it as words). All
    # nodes share one hostname and /tmp, so each daemon gets a session directory of its own:
    # two daemons creating the same one at once is Open MPI's "internal programming error".
    cat >"$dir/agent" <<AGENT
#!/bin/sh
host=\$1; shift
ns=\$(awk -v h="\$host" '\$1 == h {print \$2}' "$dir/nodes")
[ -n "\$ns" ] || { echo "agent: unknown host \$host" >&2; exit 255; }
mkdir -p "$dir/tmp/\$ns"
export OMPI_MCA_orte_tmpdir_base="$dir/tmp/\$ns"
exec ip netns exec "\$ns" /bin/sh -c "\$*"
AGENT
    chmod +x "$dir/agent"
}

down() {
    local dir=$1
    [ -f "$dir/made" ] || return 0
    # Processes first (an orted or a rank left by a failed run), by pid, namespace by namespace;
    # twice, for one that was entering a namespace the first time.
    local kind name pass
    for pass in 1 2; do
        while read -r kind name; do
            if [ "$kind" = netns ]; then
                local pids
                pids=$(ip netns pids "$name" 2>/dev/null || true)
                [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
            fi
        done <"$dir/made"
        sleep 0.2
    done
    tac "$dir/made" | while read -r kind name; do
        case $kind in
            veth) ip link del "$name" 2>/dev/null || true ;;
            netns) ip netns del "$name" 2>/dev/null || true ;;
            bridge) ip link del "$name" 2>/dev/null || true ;;
        esac
    done
    rm -f "$dir/made"
}

set_rate() {
    local dir=$1 rate=$2 ip ns v
    while read -r ip ns v; do
        tbf change eth0 "$rate" "$ns"
        tbf change "$v" "$rate"
    done <"$dir/nodes"
    echo "$rate" >"$dir/rate"
}

link() {
    local dir=$1 i=$2 state=$3 v
    v=$(awk -v i="$i" 'NR == i {print $3}' "$dir/nodes")
    [ -n "$v" ] || die "no node $i"
    ip link set "$v" "$state"
}

run_mpirun() {
    local dir=$1 np=$2; shift 2
    local ns1 net
    ns1=$(awk 'NR == 1 {print $2}' "$dir/nodes")
    net=$(cat "$dir/net")
    # routed direct: the default tree routing fails with this launcher; both transports on
    # the emulated network only. Should a launch still fail with Open MPI's "internal
    # programming error" before any rank starts, it is retried once.
    local cmd=(ip netns exec "$ns1" mpirun --hostfile "$dir/hosts" -np "$np" --map-by node
               --mca plm_rsh_agent "$dir/agent" --mca routed direct --mca btl self,tcp
               --mca btl_tcp_if_include "$net" --mca oob_tcp_if_include "$net"
               -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -x PATH "$@")
    local out rc
    out=$(mktemp)
    set +e
    "${cmd[@]}" 2> >(tee "$out" >&2)
    rc=$?
    set -e
    if [ $rc -ne 0 ] && grep -q "internal programming error" "$out"; then
        echo "netns_cluster.sh: mpirun launch failed with Open MPI's internal error; retrying once" >&2
        set +e
        "${cmd[@]}"
        rc=$?
        set -e
    fi
    rm -f "$out"
    return $rc
}

case ${1:-} in
    up) [ $# -eq 4 ] || die "usage: up DIR N RATE"; up "$2" "$3" "$4" ;;
    down) [ $# -eq 2 ] || die "usage: down DIR"; down "$2" ;;
    rate) [ $# -eq 3 ] || die "usage: rate DIR RATE"; set_rate "$2" "$3" ;;
    link) [ $# -eq 4 ] || die "usage: link DIR I up|down"; link "$2" "$3" "$4" ;;
    mpirun) [ $# -ge 3 ] || die "usage: mpirun DIR NP ARGS..."; d=$2 np=$3; shift 3; run_mpirun "$d" "$np" "$@" ;;
    run)
        [ $# -ge 5 ] && [ "$4" = "--" ] || die "usage: run N RATE -- CMD..."
        n=$2 rate=$3; shift 4
        dir=$(mktemp -d /tmp/gt-cluster.XXXXXX)
        child=
        # On any exit (CMD done, a failure here, SIGINT/SIGTERM) CMD's processes go first,
        # then the cluster (down kills whatever still runs inside the namespaces).
        trap '[ -n "$child" ] && kill -TERM -- -"$child" 2>/dev/null; down "$dir"; rm -rf "$dir"' EXIT
        trap 'exit 130' INT TERM
        up "$dir" "$n" "$rate"
        export GT_CLUSTER_DIR=$dir GT_CLUSTER_NODES=$n GT_CLUSTER_RATE=$rate GT_CLUSTER=$SELF
        # CMD in its own process group, waited for with `wait` so a signal is acted on at once.
        set +e
        set -m
        "$@" &
        child=$!
        set +m
        wait "$child"
        rc=$?
        child=
        set -e
        exit $rc
        ;;
    *) sed -n '2,20p' "$SELF" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
