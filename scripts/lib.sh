# shellcheck shell=bash
# Shared helpers for scripts that build throwaway network-namespace topologies
# (bench.sh, and later a demo). Source it; it defines functions and state only.
#
# Every namespace is named "$LB_PREFIX<short>" and recorded; every background
# process is started through lb_spawn and its pid recorded. lb_cleanup kills
# exactly those pids (TERM, then KILL), then any process still inside one of
# our namespaces (which can only have been started by us), then deletes the
# namespaces (which removes their veths, bridges and TAPs) and the work dir.
# Install it with lb_install_traps as early as possible.

LB_PREFIX=${LB_PREFIX:-lbb$$-}
LB_NSS=()
LB_PIDS=()
LB_WORK=""
LB_CLEANED=0

lb_log() { printf '%s\n' "$*" >&2; }
lb_die() { lb_log "error: $*"; exit 1; }

# lb_need CMD...: fails with one line naming every missing command.
lb_need() {
    local missing=() c
    for c in "$@"; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
    if ((${#missing[@]})); then
        lb_die "missing required commands: ${missing[*]} (Debian/Ubuntu: apt-get install iproute2 iputils-ping iperf3; for losses also nftables ethtool)"
    fi
}

lb_workdir() {
    LB_WORK=$(mktemp -d "/tmp/${LB_PREFIX}XXXXXX") || lb_die "mktemp failed"
}

# lb_ns SHORT: creates namespace $LB_PREFIX$SHORT with loopback up.
lb_ns() {
    local ns="$LB_PREFIX$1"
    ip netns add "$ns" || lb_die "ip netns add $ns failed"
    LB_NSS+=("$ns")
    ip -n "$ns" link set lo up
}

# lb_x SHORT CMD...: runs CMD inside namespace SHORT.
lb_x() {
    local ns="$LB_PREFIX$1"
    shift
    ip netns exec "$ns" "$@"
}

# lb_switch SHORT: a namespace holding an STP-less kernel bridge br0.
lb_switch() {
    lb_ns "$1"
    ip -n "$LB_PREFIX$1" link add br0 type bridge stp_state 0 forward_delay 0 || lb_die "bridge in $1"
    ip -n "$LB_PREFIX$1" link set br0 up
}

# lb_plug HOST IFNAME SWITCH [CIDR]: a veth from HOST (named IFNAME) into
# SWITCH's br0. Both ends are created directly inside their namespaces, so
# nothing ever appears in the root namespace.
lb_plug() {
    local host="$LB_PREFIX$1" ifname=$2 sw="$LB_PREFIX$3" cidr=${4:-}
    local port
    port="p$((${#LB_PORTS[@]} + 1))"
    LB_PORTS+=("$port")
    ip link add "$ifname" netns "$host" type veth peer name "$port" netns "$sw" ||
        lb_die "veth $1/$ifname -> $3 failed"
    ip -n "$sw" link set "$port" master br0 up
    ip -n "$host" link set "$ifname" up
    [[ -n $cidr ]] && ip -n "$host" addr add "$cidr" dev "$ifname"
    return 0
}
LB_PORTS=()

# lb_spawn SHORT LOGFILE CMD...: starts CMD in namespace SHORT in the
# background, output to LOGFILE; sets LB_LAST_PID. `ip netns exec` execs
# the command, so the pid is the command's own.
lb_spawn() {
    local ns="$LB_PREFIX$1" log=$2
    shift 2
    ip netns exec "$ns" "$@" </dev/null >"$log" 2>&1 &
    LB_LAST_PID=$!
    LB_PIDS+=("$LB_LAST_PID")
}

# lb_fg OUT CMD...: runs CMD with output to OUT and waits for it. CMD runs
# as a background job and the shell waits with the `wait` builtin, which a
# trapped signal interrupts at once (a plain foreground command would delay
# the trap until it ends). Returns CMD's status.
LB_FG=""
lb_fg() {
    local out=$1 rc
    shift
    "$@" </dev/null >"$out" 2>&1 &
    LB_FG=$!
    wait "$LB_FG"
    rc=$?
    LB_FG=""
    return $rc
}

# lb_ours PID: true while PID is alive and a child of this shell (so a pid
# reused by someone else after our process ended is never signalled).
lb_ours() {
    local st
    st=$(awk '/^State:/ { s = $2 } /^PPid:/ { p = $2 } END { print s, p }' "/proc/$1/status" 2>/dev/null) || return 1
    [[ $st == [!Z]*" $$" ]]
}

# lb_stop PID: TERM, wait up to 3 s, then KILL. Only for pids we started.
lb_stop() {
    local pid=$1 i
    if lb_ours "$pid"; then
        kill -TERM "$pid" 2>/dev/null
        for ((i = 0; i < 30; i++)); do
            lb_ours "$pid" || break
            sleep 0.1
        done
        lb_ours "$pid" && kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    return 0
}

# lb_wait_ping SHORT DST SECS: pings DST from SHORT once a second until it
# answers, for at most SECS seconds.
lb_wait_ping() {
    local ns=$1 dst=$2 secs=$3 end=$((SECONDS + $3))
    while ((SECONDS < end)); do
        lb_x "$ns" ping -n -q -c 1 -W 1 "$dst" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    lb_log "no ping answer from $dst in namespace $ns within ${secs}s"
    return 1
}

# lb_wait_for SECS CMD...: polls CMD every 0.1 s until it succeeds, bounded.
lb_wait_for() {
    local end=$((SECONDS + $1))
    shift
    while ((SECONDS < end)); do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}

# ---- lossy paths ----------------------------------------------------------
# nftables has no delay and this kernel no sch_netem: loss is a rule that
# drops a random share of packets (numgen random mod 1000 < N). Each table
# counts what its rule looked at ("seen") and what it dropped ("dropped").

# lb_ethtool_off SHORT IFACE FEATURE...: turns the offload features off on
# IFACE in namespace SHORT (e.g. tx-udp-segmentation, so a UDP GSO burst is
# cut into single datagrams at that device, before any rule sees it).
lb_ethtool_off() {
    local ns=$1 iface=$2 f args=()
    shift 2
    for f in "$@"; do args+=("$f" off); done
    lb_x "$ns" ethtool -K "$iface" "${args[@]}" >/dev/null ||
        lb_die "ethtool -K $iface ${args[*]} in $ns failed"
}

# lb_loss_switch SWITCH PERMILLE: SWITCH's kernel bridge drops PERMILLE in
# 1000 of the UDP datagrams it forwards, in both directions and on every hop
# through it (table bridge lbloss).
lb_loss_switch() {
    lb_x "$1" nft -f - <<EOF || lb_die "nftables loss rule in $1 failed"
table bridge lbloss {
    counter seen { }
    counter dropped { }
    chain forward {
        type filter hook forward priority 0; policy accept;
        meta l4proto udp counter name "seen"
        meta l4proto udp numgen random mod 1000 < $2 counter name "dropped" drop
    }
}
EOF
}

# lb_loss_from HOST PERMILLE PEERIP: HOST drops PERMILLE in 1000 of the IPv4
# packets it receives from PEERIP (table inet lbloss, input hook).
lb_loss_from() {
    lb_x "$1" nft -f - <<EOF || lb_die "nftables loss rule in $1 failed"
table inet lbloss {
    counter seen { }
    counter dropped { }
    chain input {
        type filter hook input priority 0; policy accept;
        ip saddr $3 counter name "seen"
        ip saddr $3 numgen random mod 1000 < $2 counter name "dropped" drop
    }
}
EOF
}

# lb_loss_counts FAMILY:SHORT...: prints "SEEN DROPPED", the packets the
# lbloss tables of those namespaces looked at and dropped, summed.
lb_loss_counts() {
    local spec seen=0 dropped=0 s d
    for spec in "$@"; do
        s=$(lb_x "${spec#*:}" nft list counter "${spec%%:*}" lbloss seen 2>/dev/null |
            awk '$1 == "packets" { print $2 }')
        d=$(lb_x "${spec#*:}" nft list counter "${spec%%:*}" lbloss dropped 2>/dev/null |
            awk '$1 == "packets" { print $2 }')
        seen=$((seen + ${s:-0})) dropped=$((dropped + ${d:-0}))
    done
    echo "$seen $dropped"
}

lb_cleanup() {
    ((LB_CLEANED)) && return 0
    LB_CLEANED=1
    local pid ns p
    [[ -n $LB_FG ]] && lb_stop "$LB_FG"
    for pid in "${LB_PIDS[@]}"; do lb_stop "$pid"; done
    for ns in "${LB_NSS[@]}"; do
        # Anything still running in a namespace we made was started by us.
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    done
    for ns in "${LB_NSS[@]}"; do ip netns del "$ns" 2>/dev/null; done
    declare -F lb_before_workdir_removal >/dev/null && lb_before_workdir_removal
    [[ -n $LB_WORK && -d $LB_WORK ]] && rm -rf -- "$LB_WORK"
    return 0
}

lb_install_traps() {
    trap lb_cleanup EXIT
    trap 'lb_log "interrupted"; exit 130' INT
    trap 'lb_log "terminated"; exit 143' TERM
}
