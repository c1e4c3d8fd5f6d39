#!/usr/bin/env bash
# The lab network: namespaces "dc", "attacker", "client" on a bridge in namespace "wire".
#   network.sh up     build it (idempotent: tears down a leftover lab first)
#   network.sh down   remove it (kills what still runs inside the namespaces)
#
#   client 10.0.0.5  fd00::5  --\
#   attacker 10.0.0.66 fd00::66 --- br0 (ns wire) --- dc 10.0.0.10 fd00::10 (smbd, tcpdump)
#
# The attacker's port w-att can be taken off br0 and put behind pcaps/lab/forwarder.py
# (w-att <-> w-fwd, w-fwdbr on br0) for impairments and the 802.1Q mirror (w-mon0 -> w-mon1),
# because this kernel may lack netem and 8021q.
set -euo pipefail

NAMESPACES=(dc attacker client wire)

down() {
    for ns in "${NAMESPACES[@]}"; do
        if ip netns list | grep -qw "$ns"; then
            # Kill only what runs inside our own lab namespaces, by pid.
            pids=$(ip netns pids "$ns" || true)
            [[ -n "$pids" ]] && kill $pids 2>/dev/null || true
        fi
    done
    sleep 0.3
    for ns in "${NAMESPACES[@]}"; do
        if ip netns list | grep -qw "$ns"; then
            pids=$(ip netns pids "$ns" || true)
            [[ -n "$pids" ]] && kill -9 $pids 2>/dev/null || true
            ip netns del "$ns"
        fi
    done
}

# Checksum and segmentation offloads off: captures then carry real checksums and
# wire-sized segments, and the user-space forwarder can re-inject frames as they are.
no_offload() {
    ip netns exec "$1" ethtool -K "$2" tx off rx off tso off gso off gro off >/dev/null 2>&1 || true
}

host() {  # host NAME V4 V6
    local ns=$1 v4=$2 v6=$3 port="w-$1"
    [[ $ns == attacker ]] && port=w-att
    ip netns add "$ns"
    ip link add eth0 netns "$ns" type veth peer name "$port" netns wire
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$v4/24" dev eth0
    ip -n "$ns" addr add "$v6/64" dev eth0 nodad
    ip -n "$ns" link set eth0 up
    ip -n wire link set "$port" master br0 up
    no_offload "$ns" eth0
    no_offload wire "$port"
}

up() {
    down
    ip netns add wire
    ip -n wire link set lo up
    ip -n wire link add br0 type bridge
    ip netns exec wire sysctl -qw net.ipv6.conf.br0.disable_ipv6=1
    ip -n wire link set br0 up
    host dc 10.0.0.10 fd00::10
    host attacker 10.0.0.66 fd00::66
    host client 10.0.0.5 fd00::5
    # Spare pairs for the forwarder: w-fwd (forwarder side) <-> w-fwdbr (on br0), and the
    # mirror w-mon0 (forwarder writes tagged copies) -> w-mon1 (tcpdump listens).
    ip -n wire link add w-fwd type veth peer name w-fwdbr
    ip -n wire link set w-fwdbr master br0 up
    ip -n wire link set w-fwd up
    ip -n wire link add w-mon0 type veth peer name w-mon1
    ip -n wire link set w-mon0 up
    ip -n wire link set w-mon1 up
    for ifc in w-fwd w-fwdbr w-mon0 w-mon1; do no_offload wire "$ifc"; done
    for ifc in w-fwd w-fwdbr w-mon0 w-mon1; do ip netns exec wire sysctl -qw "net.ipv6.conf.$ifc.disable_ipv6=1"; done
}

"${1:?usage: network.sh up|down}"
