#!/usr/bin/env bash
# Throughput and latency of lanbridge against a kernel bridge, side by side,
# in throwaway network namespaces on this one machine. See --help.
set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$HERE/lib.sh"

usage() {
    cat <<EOF
Usage: scripts/bench.sh [OPTIONS]

Measures, in one run and on this machine, TCP throughput (iperf3) and ping
RTT between network namespaces:
  kernel bridge   two hosts on one kernel bridge (the reference)
  overlay         two edges (TAP) through a relay, over a kernel-bridge underlay
  LAN <-> LAN     two hosts on a LAN switch (reference for the bridge rows)
  virtual -> LAN  an edge host to a LAN host through the relay and 'lanbridge bridge'
  LAN -> virtual  the other direction
  virtual -> LAN direct
                  the same transfer once edge and bridge send to each other
                  directly (issue 11; both restarted without --no-direct)
The bridge rows run only when 'lanbridge bridge --help' succeeds. When the
build has --no-direct, every relayed row runs its members with it (all the
members share one underlay, where they would otherwise find a direct path),
and the direct row runs after waiting (at most $DIRECT_WAIT s) until both
members' 'lanbridge status --json' show the path as direct; without it
(an older build, see --bin) there is no direct row. Every row but the
references shows the relay process's CPU time (utime + stime from /proc;
n2n: its supernode's) over its two TCP tests, in % of one core.
With --loss, an n2n row (edge N1 -- supernode -- edge N2) joins the relay
rows when n2n 1.3's 'supernode' and 'edge' are installed (or with --n2n).
Prints a table with ratios to the reference. Needs root, ip, ping, iperf3,
and python3 or jq. Everything it makes is named lbb<pid>-* and removed
on exit, also on Ctrl-C.

Options:
  --time SECS      iperf3 duration of each test (default 5)
  --bin PATH       lanbridge binary to use (default: run 'cargo build --release'
                   and use \${CARGO_TARGET_DIR:-target}/release/lanbridge)
  --only WHAT      'relay' (kernel bridge + overlay), 'bridge' (LAN rows,
                   direct row included) or 'direct' (LAN <-> LAN, relayed and
                   direct virtual -> LAN)
  --streams N      parallel streams of the second TCP test (default 4; the
                   first test is always 1 stream)
  --keep-logs DIR  copy the relay, edge, bridge and iperf3 logs into DIR at exit
  --no-offload     run edges and the bridge with --no-offload (one MTU-sized
                   frame per TAP read and write, no coalescing, Frame datagrams
                   the relay decrypts), to compare
  --loss PER_MILLE make every path lossy: drop PER_MILLE in 1000 (0..1000;
                   10 = 1 %) of the UDP datagrams on each underlay hop (the
                   internet switch forwards them; a relayed path crosses two
                   hops each way), with UDP GSO cut at every sender's device
                   so single datagrams are lost; the references (kernel
                   bridge, LAN<->LAN) lose the same share of their IP packets,
                   cut to MTU size by their switch ports. Adds the measured
                   loss beside each row. Needs nft and ethtool. --loss 0 sets
                   up the same paths without dropping, as a baseline. The
                   direct row's datagrams cross the internet switch once
                   each way, so it loses at the same per-hop rate as the
                   relayed rows, on one hop instead of two
  --n2n            add the n2n row (default: with --loss, when installed)
  --no-n2n         leave the n2n row out
  -h, --help       this text
EOF
}

TIME=5
DIRECT_WAIT=20
BIN=""
ONLY=""
STREAMS=4
KEEP_LOGS=""
MEMBER_ARGS=()
LOSS=""
N2N=auto
while (($#)); do
    case $1 in
    --time) TIME=${2:-}; shift 2 || { usage >&2; exit 2; } ;;
    --time=*) TIME=${1#*=}; shift ;;
    --bin) BIN=${2:-}; shift 2 || { usage >&2; exit 2; } ;;
    --bin=*) BIN=${1#*=}; shift ;;
    --only) ONLY=${2:-}; shift 2 || { usage >&2; exit 2; } ;;
    --only=*) ONLY=${1#*=}; shift ;;
    --streams) STREAMS=${2:-}; shift 2 || { usage >&2; exit 2; } ;;
    --streams=*) STREAMS=${1#*=}; shift ;;
    --keep-logs) KEEP_LOGS=${2:-}; shift 2 || { usage >&2; exit 2; } ;;
    --keep-logs=*) KEEP_LOGS=${1#*=}; shift ;;
    --no-offload) MEMBER_ARGS+=(--no-offload); shift ;;
    --loss) LOSS=${2:-}; shift 2 || { usage >&2; exit 2; } ;;
    --loss=*) LOSS=${1#*=}; shift ;;
    --n2n) N2N=1; shift ;;
    --no-n2n) N2N=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) lb_log "unknown argument: $1"; usage >&2; exit 2 ;;
    esac
done
[[ $TIME =~ ^[1-9][0-9]*$ ]] && ((TIME <= 600)) || lb_die "--time must be 1..600 seconds, not '$TIME'"
[[ $STREAMS =~ ^[1-9][0-9]*$ ]] && ((STREAMS <= 64)) || lb_die "--streams must be 1..64, not '$STREAMS'"
case $ONLY in "" | relay | bridge | direct) ;; *) lb_die "--only takes 'relay', 'bridge' or 'direct', not '$ONLY'" ;; esac
if [[ -n $LOSS ]]; then
    [[ $LOSS =~ ^[0-9]+$ ]] && ((10#$LOSS <= 1000)) || lb_die "--loss must be 0..1000 (per mille), not '$LOSS'"
    LOSS=$((10#$LOSS))
fi

# ---- prerequisites ---------------------------------------------------------
((EUID == 0)) || lb_die "needs root (network namespaces); try: sudo $0 $*"
lb_need ip ping iperf3 ss timeout awk
[[ -n $LOSS ]] && lb_need nft ethtool
# n2n 1.3 (Debian package n2n): 'supernode' and an 'edge' that says n2n.
have_n2n() {
    command -v supernode >/dev/null 2>&1 && command -v edge >/dev/null 2>&1 &&
        edge -h 2>&1 | grep -qi n2n
}
N2N_WHY=""
case $N2N in
auto) N2N=0 N2N_WHY="n2n not installed"; [[ -n $LOSS ]] && have_n2n && N2N=1 ;;
1) have_n2n || lb_die "--n2n: n2n's 'supernode' and 'edge' are not installed (apt-get install n2n)" ;;
0) N2N_WHY="--no-n2n" ;;
esac
[[ $ONLY == bridge || $ONLY == direct ]] && N2N=0 N2N_WHY="--only $ONLY"
if command -v python3 >/dev/null 2>&1; then JSONTOOL=python3
elif command -v jq >/dev/null 2>&1; then JSONTOOL=jq
else lb_die "missing required commands: python3 or jq (to read iperf3 -J output)"
fi

if [[ -z $BIN ]]; then
    command -v cargo >/dev/null 2>&1 || lb_die "cargo not found; build lanbridge yourself and pass --bin PATH"
    lb_log "building: cargo build --release (in $ROOT)"
    (cd "$ROOT" && cargo build --release >&2) || lb_die "cargo build --release failed"
    TD=${CARGO_TARGET_DIR:-target}
    [[ $TD = /* ]] || TD="$ROOT/$TD"
    BIN="$TD/release/lanbridge"
fi
[[ -x $BIN ]] || lb_die "no executable lanbridge at $BIN"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

HAVE_BRIDGE=0
"$BIN" bridge --help >/dev/null 2>&1 && HAVE_BRIDGE=1
# Direct paths (issue 11): members on one underlay find each other and stop
# using the relay unless told --no-direct. The relayed rows get it (and a
# build without the flag has no direct paths, so its rows stay relayed).
HAVE_DIRECT=0 RELAYED_ARGS=()
if "$BIN" edge --help 2>/dev/null | grep -q -- --no-direct; then
    HAVE_DIRECT=1 RELAYED_ARGS=(--no-direct)
fi
[[ $ONLY == direct ]] && ((!HAVE_BRIDGE || !HAVE_DIRECT)) &&
    lb_die "--only direct: $(basename "$BIN") has no bridge subcommand or no --no-direct (no direct paths in this build)"

lb_install_traps
lb_workdir
if [[ -n $KEEP_LOGS ]]; then
    mkdir -p -- "$KEEP_LOGS" || lb_die "cannot create $KEEP_LOGS"
    # Runs inside lb_cleanup, after the processes are stopped (their last
    # log lines, e.g. drop summaries at exit, are in).
    lb_before_workdir_removal() { cp -- "$LB_WORK"/*.log "$KEEP_LOGS"/ 2>/dev/null; }
fi

# ---- measuring -------------------------------------------------------------
IPERF_PORT=5201
RTT_COUNT=50

# iperf_gbps SRC DSTIP PARALLEL: sets GBPS to Gbit/s received, or "fail".
# Runs in the main shell (no command substitution around the long part) so a
# Ctrl-C or SIGTERM interrupts the wait at once and the cleanup trap runs.
iperf_gbps() {
    local src=$1 dst=$2 par=$3 out=$LB_WORK/iperf.json v rc
    lb_fg "$out" timeout -k 2 $((TIME + 20)) ip netns exec "$LB_PREFIX$src" \
        iperf3 -c "$dst" -p $IPERF_PORT -t "$TIME" -P "$par" -J --connect-timeout 3000
    rc=$?
    if [[ $JSONTOOL == python3 ]]; then
        v=$(python3 -c '
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    e = d["end"]
    g = e["sum_received"]["bits_per_second"] / 1e9
    # Lossy runs can fall below 10 Mbit/s: keep their digits.
    print(("%.3f %s" if g >= 0.01 else "%.5f %s") % (g,
          e.get("sum_sent", {}).get("retransmits", "?")))
except Exception:
    print("fail")' "$out")
    else
        v=$(jq -r '(.end.sum_received.bits_per_second / 1e9) as $g | (if $g >= 0.01 then 1000 else 100000 end) as $k
            | "\($g * $k | round / $k) \(.end.sum_sent.retransmits // "?")"' "$out" 2>/dev/null) || v=fail
    fi
    if [[ $v =~ ^([0-9.]+)\ (.*)$ ]]; then
        lb_log "  $src -> $dst, $par stream(s): ${BASH_REMATCH[1]} Gbit/s, ${BASH_REMATCH[2]} retransmits"
        GBPS=${BASH_REMATCH[1]}
    else
        lb_log "  iperf3 $src -> $dst -P $par failed (exit $rc): $(grep -o '"error":.*' "$out" 2>/dev/null | head -1 | head -c 300)"
        GBPS=fail
    fi
}

# rtt_us SRC DSTIP: sets RTT_US to the average ping RTT in microseconds, or "fail".
rtt_us() {
    local out=$LB_WORK/ping.out
    lb_fg "$out" ip netns exec "$LB_PREFIX$1" timeout 20 ping -n -q -c $RTT_COUNT -i 0.01 -W 1 "$2"
    RTT_US=$(awk '/^(rtt|round-trip)/ { split($0, a, "= "); split(a[2], b, "/"); printf "%.0f\n", b[2] * 1000; found = 1 }
                  END { if (!found) print "fail" }' "$out")
    [[ $RTT_US == fail ]] && lb_log "  ping $1 -> $2 failed: $(tail -n 2 "$out")"
    return 0
}

ROWS=() T1=() TN=() RTT=() REF=() LOST=() RCPU=()

# cpu_ticks PID: user + system CPU time of PID so far, in clock ticks
# (fields 14 and 15 of /proc/PID/stat, counted after the ')' that ends the
# command name), or nothing if PID is gone.
cpu_ticks() {
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null
}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null) || CLK_TCK=100
# The process whose CPU time the next measured row reports (set by each
# section before it measures; empty for the references).
CPU_PID=""

# With --loss: the lbloss tables (FAMILY:SHORT, see lb_loss_counts) the next
# measured row's packets cross; set by each section before it measures.
LOSS_AT=()

# measure LABEL SRC DST DSTIP REFROW: runs the iperf3 server in DST, the
# clients in SRC, then pings; appends a row whose ratios are against row
# index REFROW (-1: this row is a reference). With --loss, also the share
# of packets the row's loss rules dropped during the two TCP tests. With
# CPU_PID set (the relay, or n2n's supernode), also that process's CPU time
# over the two TCP tests, in % of one core.
measure() {
    local label=$1 src=$2 dst=$3 ip=$4 ref=$5 spid t1=fail tn=fail seen0 drop0 seen drop lost=-
    local cpu0="" cpu1="" wall0 wall1 rcpu=-
    lb_log "measuring: $label ($TIME s x 2 + ping)"
    lb_spawn "$dst" "$LB_WORK/iperf3-server-$dst.log" iperf3 -s -B "$ip" -p $IPERF_PORT
    spid=$LB_LAST_PID
    if lb_wait_for 5 iperf_listening "$dst"; then
        [[ -n $LOSS ]] && read -r seen0 drop0 < <(lb_loss_counts "${LOSS_AT[@]}")
        [[ -n $CPU_PID ]] && cpu0=$(cpu_ticks "$CPU_PID")
        wall0=$EPOCHREALTIME
        iperf_gbps "$src" "$ip" 1
        t1=$GBPS
        iperf_gbps "$src" "$ip" "$STREAMS"
        tn=$GBPS
        wall1=$EPOCHREALTIME
        [[ -n $CPU_PID ]] && cpu1=$(cpu_ticks "$CPU_PID")
        if [[ -n $cpu0 && -n $cpu1 ]]; then
            rcpu=$(awk -v c="$((cpu1 - cpu0))" -v hz="$CLK_TCK" -v a="$wall0" -v b="$wall1" \
                'BEGIN { printf "%.1f", 100 * c / hz / (b - a) }')
            lb_log "  relay CPU (pid $CPU_PID): $((cpu1 - cpu0)) ticks of 1/$CLK_TCK s in $(awk -v a="$wall0" -v b="$wall1" 'BEGIN { printf "%.1f", b - a }') s = $rcpu % of one core"
        fi
        if [[ -n $LOSS ]]; then
            read -r seen drop < <(lb_loss_counts "${LOSS_AT[@]}")
            seen=$((seen - seen0)) drop=$((drop - drop0))
            ((seen > 0)) && lost=$(awk -v s="$seen" -v d="$drop" 'BEGIN { printf "%.2f", 100 * d / s }')
            lb_log "  loss rules: dropped $drop of $seen packets ($lost %)"
        fi
    else
        lb_log "  iperf3 server in $dst did not start: $(head -c 300 "$LB_WORK/iperf3-server-$dst.log")"
    fi
    lb_stop "$spid"
    rtt_us "$src" "$ip"
    ROWS+=("$label") T1+=("$t1") TN+=("$tn") RTT+=("$RTT_US") REF+=("$ref") LOST+=("$lost") RCPU+=("$rcpu")
}

# fail_row LABEL REFROW: a row that could not be measured.
fail_row() {
    ROWS+=("$1") T1+=(fail) TN+=(fail) RTT+=(fail) REF+=("$2") LOST+=(-) RCPU+=(-)
}
iperf_listening() {
    [[ -n $(lb_x "$1" ss -Htln "sport = :$IPERF_PORT" 2>/dev/null) ]]
}

# ratio A B: A/B with two decimals, or "-".
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf (a / b < 0.1 ? "%.3f" : "%.2f"), a / b; else printf "-" }'
}

# udp_drops SHORT...: one line of UDP receive-buffer and other receive
# errors per namespace (kernel drops the lanbridge logs cannot see).
udp_drops() {
    local ns line=""
    for ns in "$@"; do
        line+="$ns: $(lb_x "$ns" awk '/^Udp:/ { if (!h) { for (i = 2; i <= NF; i++) n[i] = $i; h = 1 } else {
            for (i = 2; i <= NF; i++) if (n[i] == "RcvbufErrors" || n[i] == "InErrors" || n[i] == "SndbufErrors") printf "%s=%s ", n[i], $i } }' /proc/net/snmp) "
    done
    lb_log "  kernel UDP counters: $line"
    UDP_NOTES+=("kernel UDP counters after '${ROWS[-1]}' and before (cumulative): $line")
}
UDP_NOTES=()

# Shows the end of a process log when something did not come up.
show_log() {
    lb_log "---- last lines of $1 ----"
    tail -n 20 "$1" >&2
}

# ---- topologies ------------------------------------------------------------
KEY=$LB_WORK/net.key
RELAY_IP=172.16.0.1
RELAY_PORT=7171
NEXT_UNDERLAY=10
HAVE_RELAY=0
HAVE_UNDERLAY=0

# The "internet" switch; with --loss it drops that share of the UDP
# datagrams it forwards.
start_underlay() {
    ((HAVE_UNDERLAY)) && return 0
    lb_switch inet
    if [[ -n $LOSS ]]; then
        lb_loss_switch inet "$LOSS"
        lb_ethtool_off inet br0 tx-udp-segmentation
    fi
    HAVE_UNDERLAY=1
}

# underlay_plugged SHORT IFNAME: with --loss, cuts UDP GSO on the veth just
# plugged into the internet switch (both ends), so every datagram crosses
# the switch on its own and the loss rule drops single datagrams.
underlay_plugged() {
    [[ -z $LOSS ]] && return 0
    lb_ethtool_off "$1" "$2" tx-udp-segmentation
    lb_ethtool_off inet "${LB_PORTS[-1]}" tx-udp-segmentation
}

# The "internet" switch with a relay on it.
start_relay() {
    ((HAVE_RELAY)) && return 0
    (umask 077 && "$BIN" genkey >"$KEY") || lb_die "lanbridge genkey failed"
    # The relay gets only the relay key (an older binary has no relay-key:
    # it is given the network key, as it was then).
    RELAY_KEY=$KEY
    if (umask 077 && "$BIN" relay-key <"$KEY" >"$KEY.relay") 2>/dev/null; then
        RELAY_KEY=$KEY.relay
    fi
    start_underlay
    lb_ns relay
    lb_plug relay eth0 inet "$RELAY_IP/24"
    underlay_plugged relay eth0
    lb_spawn relay "$LB_WORK/relay.log" "$BIN" relay --listen "$RELAY_IP:$RELAY_PORT" --key-file "$RELAY_KEY"
    RELAY_PID=$LB_LAST_PID
    HAVE_RELAY=1
}

# underlay_host SHORT [IFNAME]: a namespace with IFNAME (eth0) on the internet switch.
underlay_host() {
    lb_ns "$1"
    lb_plug "$1" "${2:-eth0}" inet "172.16.0.$NEXT_UNDERLAY/24"
    underlay_plugged "$1" "${2:-eth0}"
    UNDERLAY_IP=172.16.0.$NEXT_UNDERLAY
    NEXT_UNDERLAY=$((NEXT_UNDERLAY + 1))
}

# start_edge SHORT CIDR: an underlay host running an edge with tap0 = CIDR,
# through the relay only (RELAYED_ARGS).
start_edge() {
    underlay_host "$1"
    spawn_edge "$1" "$2" "$LB_WORK/edge-$1.log" "${RELAYED_ARGS[@]}"
}

# spawn_edge SHORT CIDR LOG [ARG...]: runs an edge with tap0 = CIDR in the
# existing underlay host SHORT; sets EDGE_PID.
spawn_edge() {
    local short=$1 cidr=$2 log=$3
    shift 3
    lb_spawn "$short" "$log" "$BIN" edge --relay "$RELAY_IP:$RELAY_PORT" \
        --key-file "$KEY" --tap tap0 --address "$cidr" "${MEMBER_ARGS[@]}" "$@"
    EDGE_PID=$LB_LAST_PID
    if ! lb_wait_for 10 lb_x "$short" ip link show tap0 >/dev/null 2>&1; then
        show_log "$log"
        lb_die "edge $short made no tap0"
    fi
}

# reference_host SHORT SWITCH CIDR PEERIP: plugs SHORT into SWITCH; with
# --loss, the switch port towards it cuts TCP segmentation (so it receives
# MTU-sized packets, as from a wire) and it drops the loss share of the IP
# packets from PEERIP, the other end of the reference path.
reference_host() {
    lb_plug "$1" eth0 "$2" "$3"
    [[ -z $LOSS ]] && return 0
    lb_ethtool_off "$2" "${LB_PORTS[-1]}" tx-tcp-segmentation tx-tcp6-segmentation
    lb_loss_from "$1" "$LOSS" "$4"
}

KREF=-1
section_kernel() {
    lb_log "== kernel bridge: A -- br0 -- B"
    lb_switch sw
    lb_ns a
    lb_ns b
    reference_host a sw 10.0.0.1/24 10.0.0.2
    reference_host b sw 10.0.0.2/24 10.0.0.1
    lb_wait_ping a 10.0.0.2 10 || lb_die "kernel bridge baseline does not ping"
    KREF=${#ROWS[@]}
    LOSS_AT=(inet:a inet:b) CPU_PID=""
    measure "kernel bridge A->B" a b 10.0.0.2 -1
}

section_overlay() {
    lb_log "== overlay: edge E1 -- relay -- edge E2"
    start_relay
    start_edge e1 10.10.0.1/24
    start_edge e2 10.10.0.2/24
    if ! lb_wait_ping e1 10.10.0.2 20; then
        show_log "$LB_WORK/relay.log"
        show_log "$LB_WORK/edge-e1.log"
        lb_die "overlay E1 -> E2 does not ping"
    fi
    LOSS_AT=(bridge:inet) CPU_PID=$RELAY_PID
    measure "overlay E1->E2" e1 e2 10.10.0.2 "$KREF"
    udp_drops e1 relay e2
}

# n2n 1.3 (reference peer): a supernode and two edges on the same underlay,
# TAP n2n0 (10.30.0.0/24), encrypted with a throwaway key. n2n edges talk
# directly once they find each other; the internet switch drops UDP between
# them, so everything goes through the supernode, as lanbridge's goes
# through its relay (same hops, same loss).
N2N_PORT=7654
section_n2n() {
    lb_log "== n2n: edge N1 -- supernode -- edge N2"
    start_underlay
    underlay_host sn
    local sn=$UNDERLAY_IP n2nkey n1ip
    n2nkey=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    lb_spawn sn "$LB_WORK/n2n-supernode.log" supernode -l $N2N_PORT
    local snpid=$LB_LAST_PID
    underlay_host n1
    n1ip=$UNDERLAY_IP
    underlay_host n2
    # Before the loss rule (priority -10), so it counts none of these.
    lb_x inet nft -f - <<EOF || lb_die "nftables rule against direct n2n traffic failed"
table bridge lbnodirect {
    chain forward {
        type filter hook forward priority -10; policy accept;
        ip saddr { $n1ip, $UNDERLAY_IP } ip daddr { $n1ip, $UNDERLAY_IP } meta l4proto udp counter drop
    }
}
EOF
    # An n2n 1.3 edge whose first REGISTER to the supernode is lost on the
    # lossy underlay stayed mute for more than 20 s here (it re-registers
    # only much later). So start the edges afresh, up to 3 times.
    local try e1pid e2pid up=0
    for try in 1 2 3; do
        # The key goes in through the environment, not the command line.
        lb_spawn n1 "$LB_WORK/n2n-edge-n1-$try.log" env N2N_KEY="$n2nkey" edge -d n2n0 -a 10.30.0.1 \
            -s 255.255.255.0 -c lbbench -l "$sn:$N2N_PORT"
        e1pid=$LB_LAST_PID
        lb_spawn n2 "$LB_WORK/n2n-edge-n2-$try.log" env N2N_KEY="$n2nkey" edge -d n2n0 -a 10.30.0.2 \
            -s 255.255.255.0 -c lbbench -l "$sn:$N2N_PORT"
        e2pid=$LB_LAST_PID
        if lb_wait_ping n1 10.30.0.2 10; then
            up=1
            break
        fi
        lb_log "  n2n: N1 -> N2 does not ping (attempt $try of 3)"
        lb_stop "$e1pid"
        lb_stop "$e2pid"
    done
    if ((!up)); then
        show_log "$LB_WORK/n2n-supernode.log"
        show_log "$LB_WORK/n2n-edge-n1-3.log"
        NOTE_N2N="n2n row failed: N1 -> N2 does not ping through n2n (edges started 3 times)"
        lb_log "== $NOTE_N2N"
        return 0
    fi
    ((try > 1)) && NOTE_N2N="n2n edges came up only at start $try of 3 (the first registrations were lost)"
    LOSS_AT=(bridge:inet) CPU_PID=$snpid
    measure "n2n N1->N2" n1 n2 10.30.0.2 "$KREF"
    lb_log "  direct N1<->N2 datagrams dropped (n2n must use its supernode): $(lb_x inet nft list chain bridge lbnodirect forward | grep -o 'packets [0-9]*')"
}
NOTE_N2N=""

NOTE_BRIDGE=""
section_bridge() {
    if ((!HAVE_BRIDGE)); then
        NOTE_BRIDGE="bridge rows skipped: '$(basename "$BIN") bridge --help' fails (no bridge subcommand in this build)"
        lb_log "== $NOTE_BRIDGE"
        return 0
    fi
    lb_log "== LAN: L1, L2, bridge host B on a LAN switch; virtual host V on an edge"
    start_relay
    lb_switch lan
    lb_ns l1
    lb_ns l2
    reference_host l1 lan 192.168.77.11/24 192.168.77.12
    reference_host l2 lan 192.168.77.12/24 192.168.77.11
    underlay_host bh eth1
    lb_plug bh eth0 lan 192.168.77.2/24
    spawn_bridge "$LB_WORK/bridge.log" "${RELAYED_ARGS[@]}"
    start_edge v 192.168.77.100/24
    lb_wait_ping l1 192.168.77.12 10 || lb_die "LAN L1 -> L2 does not ping"
    if ! lb_wait_ping v 192.168.77.11 20; then
        show_log "$LB_WORK/relay.log"
        show_log "$LB_WORK/bridge.log"
        show_log "$LB_WORK/edge-v.log"
        lb_die "virtual V -> LAN L1 does not ping through the bridge"
    fi
    LREF=${#ROWS[@]}
    LOSS_AT=(inet:l1 inet:l2) CPU_PID=""
    measure "LAN L1->L2" l1 l2 192.168.77.12 -1
    LOSS_AT=(bridge:inet) CPU_PID=$RELAY_PID
    RELAYED_ROW=${#ROWS[@]}
    measure "virtual V->LAN L1" v l1 192.168.77.11 "$LREF"
    [[ $ONLY != direct ]] && measure "LAN L1->virtual V" l1 v 192.168.77.100 "$LREF"
    udp_drops v relay bh
    section_direct
}
LREF=-1 RELAYED_ROW=-1

# spawn_bridge LOG [ARG...]: runs the bridge on bh's eth0 (the LAN), its
# relay connection on eth1 (the internet); sets BRIDGE_PID.
spawn_bridge() {
    local log=$1
    shift
    lb_spawn bh "$log" "$BIN" bridge --iface eth0 \
        --relay "$RELAY_IP:$RELAY_PORT" --key-file "$KEY" "${MEMBER_ARGS[@]}" "$@"
    BRIDGE_PID=$LB_LAST_PID
}

# status_json SHORT: the 'lanbridge status --json' of the one lanbridge
# process in namespace SHORT.
status_json() {
    lb_x "$1" timeout 5 "$BIN" status --json 2>/dev/null
}

# member_id SHORT: the member id of the edge or bridge in SHORT, or nothing.
member_id() {
    if [[ $JSONTOOL == python3 ]]; then
        status_json "$1" | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
    print(((d.get("edge") or d.get("bridge") or {}).get("uplink") or {}).get("member", ""))
except Exception:
    pass'
    else
        status_json "$1" | jq -r '(.edge // .bridge).uplink.member // empty' 2>/dev/null
    fi
}

# path_view SHORT PEER: "PATH ADDRESS RTT changes=N" for the path of the
# member in SHORT to member PEER (PATH: direct, relay, or none when PEER is
# not listed; N: the member's path changes so far), or nothing.
path_view() {
    if [[ $JSONTOOL == python3 ]]; then
        status_json "$1" | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
    u = (d.get("edge") or d.get("bridge") or {}).get("uplink") or {}
    m = ([m for m in u.get("members", []) if m.get("id") == sys.argv[1]] or [{}])[0]
    r = m.get("path_rtt_ms")
    print(m.get("path") or "none", m.get("path_address") or "-",
          "-" if r is None else "%.3fms" % r, "changes=%s" % u.get("path_changes", 0))
except Exception:
    pass' "$2"
    else
        status_json "$1" | jq -r --arg p "$2" '(.edge // .bridge).uplink as $u
            | ([$u.members[]? | select(.id == $p)][0] // {}) as $m
            | "\($m.path // "none") \($m.path_address // "-") \(if $m.path_rtt_ms == null then "-"
                else "\($m.path_rtt_ms * 1000 | round / 1000)ms" end) changes=\($u.path_changes // 0)"' 2>/dev/null
    fi
}

# The direct row (issue 11): V's edge and the bridge restarted without
# --no-direct, V pinging L1 (members probe the members they talk to) until
# both report a direct path to each other, for at most DIRECT_WAIT s; then
# the same transfer as the relayed row. The relay stays up and idle.
NOTE_DIRECT=""
DIRECT_ROW=-1
section_direct() {
    local label="virtual V->LAN L1 direct" vid bid pv="" pb="" ok=0 t0 end
    if ((!HAVE_DIRECT)); then
        NOTE_DIRECT="direct row skipped: '$(basename "$BIN") edge --help' has no --no-direct (no direct paths in this build)"
        lb_log "== $NOTE_DIRECT"
        return 0
    fi
    lb_log "== direct: edge V and bridge B restarted without --no-direct"
    lb_stop "$EDGE_PID"
    lb_stop "$BRIDGE_PID"
    spawn_bridge "$LB_WORK/bridge-direct.log"
    spawn_edge v 192.168.77.100/24 "$LB_WORK/edge-v-direct.log"
    if ! lb_wait_ping v 192.168.77.11 20; then
        show_log "$LB_WORK/bridge-direct.log"
        show_log "$LB_WORK/edge-v-direct.log"
        NOTE_DIRECT="direct row failed: V -> L1 does not ping after the restart without --no-direct"
        lb_log "== $NOTE_DIRECT"
        fail_row "$label" "$LREF"
        return 0
    fi
    vid=$(member_id v) bid=$(member_id bh)
    t0=$SECONDS end=$((SECONDS + DIRECT_WAIT))
    while [[ -n $vid && -n $bid ]] && ((SECONDS < end)); do
        lb_x v ping -n -q -c 1 -W 1 192.168.77.11 >/dev/null 2>&1
        pv=$(path_view v "$bid") pb=$(path_view bh "$vid")
        if [[ $pv == direct\ * && $pb == direct\ * ]]; then
            ok=1
            break
        fi
        sleep 0.2
    done
    if ((!ok)); then
        show_log "$LB_WORK/bridge-direct.log"
        show_log "$LB_WORK/edge-v-direct.log"
        NOTE_DIRECT="direct row failed: no direct path within $DIRECT_WAIT s (member ids: V '${vid:-?}', bridge '${bid:-?}'; V's path to the bridge: '${pv:-?}'; the bridge's to V: '${pb:-?}')"
        lb_log "== $NOTE_DIRECT"
        fail_row "$label" "$LREF"
        return 0
    fi
    lb_log "  direct after $((SECONDS - t0)) s: V -> bridge: $pv; bridge -> V: $pb"
    local before="$pv / $pb" changes0="${pv##* } ${pb##* }"
    LOSS_AT=(bridge:inet) CPU_PID=$RELAY_PID
    DIRECT_ROW=${#ROWS[@]}
    measure "$label" v l1 192.168.77.11 "$LREF"
    pv=$(path_view v "$bid") pb=$(path_view bh "$vid")
    lb_log "  after the row: V -> bridge: $pv; bridge -> V: $pb"
    # Same path, same change counters: the row never left the direct path.
    if [[ $pv != direct\ * || $pb != direct\ * || "${pv##* } ${pb##* }" != "$changes0" ]]; then
        NOTE_DIRECT="the path changed during the direct row, which was then partly relayed (V -> bridge / bridge -> V before: $before; after: $pv / $pb)"
        lb_log "== $NOTE_DIRECT"
    fi
    udp_drops v relay bh
}

# ---- run -------------------------------------------------------------------
START=$SECONDS
echo "lanbridge bench: $("$BIN" --version 2>&1 | head -1) ($BIN)"
echo "machine: nproc=$(nproc), kernel $(uname -r), $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
echo "tools: $(iperf3 --version 2>&1 | head -1); iperf3 -t $TIME, ping -c $RTT_COUNT -i 0.01"
echo "members: $([[ ${#MEMBER_ARGS[@]} -gt 0 ]] && echo "--no-offload (one frame per TAP read/write)" || echo "fast path (super-frames sent one segment per datagram, put back together on receive; default)")"
if [[ -n $LOSS ]]; then
    echo "loss: $LOSS in 1000 UDP datagrams dropped on each underlay hop (nftables in the internet"
    echo "  switch; UDP GSO cut at every sender's device); relayed rows cross two hops each way."
    echo "  References: each end drops $LOSS in 1000 IP packets from the other (TCP cut to MTU"
    echo "  size by its switch port). Column 'loss': share the rules dropped during the row's TCP tests."
    ((N2N)) && echo "  n2n row: edge to edge only through the supernode (direct UDP between them dropped)."
    ((N2N)) || echo "  n2n row: left out ($N2N_WHY)"
fi
if ((HAVE_DIRECT)); then
    echo "paths: relayed rows with --no-direct on every member; the direct row after both of its"
    echo "  members' status showed a direct path (their datagrams cross the internet switch once)"
else
    echo "paths: this build has no --no-direct (no direct paths): every member row is relayed"
fi
echo

if [[ $ONLY != bridge && $ONLY != direct ]]; then
    section_kernel
    section_overlay
    ((N2N)) && section_n2n
fi
if [[ $ONLY != relay ]]; then
    section_bridge
fi

# ---- report ----------------------------------------------------------------
echo
W=24
if [[ -n $LOSS ]]; then
    # The same table with the measured loss beside the throughput.
    FMT="%-${W}s | %14s | %14s | %8s | %11s | %-26s | %-17s | %s\n"
    # shellcheck disable=SC2059
    printf "$FMT" path "TCP 1 stream" "TCP $STREAMS streams" "loss" "RTT avg" "ratio to kernel bridge" "RTT ratio" "relay CPU"
    # shellcheck disable=SC2059
    printf "$FMT" "" "Gbit/s" "Gbit/s" "%, hop" "us" "(1 stream / $STREAMS streams)" "(row / reference)" "% of a core"
    printf '%s\n' "$(printf -- '-%.0s' $(seq 1 143))"
else
    FMT="%-${W}s | %14s | %14s | %11s | %-26s | %-17s | %s\n"
    # shellcheck disable=SC2059
    printf "$FMT" path "TCP 1 stream" "TCP $STREAMS streams" "RTT avg" "ratio to kernel bridge" "RTT ratio" "relay CPU"
    # shellcheck disable=SC2059
    printf "$FMT" "" "Gbit/s" "Gbit/s" "us" "(1 stream / $STREAMS streams)" "(row / reference)" "% of a core"
    printf '%s\n' "$(printf -- '-%.0s' $(seq 1 132))"
fi
for i in "${!ROWS[@]}"; do
    ref=${REF[$i]}
    if ((ref < 0)); then
        rat="reference" rr="reference"
    else
        rat="$(ratio "${T1[$i]}" "${T1[$ref]}") / $(ratio "${TN[$i]}" "${TN[$ref]}")"
        rr="x$(ratio "${RTT[$i]}" "${RTT[$ref]}")"
    fi
    if [[ -n $LOSS ]]; then
        # shellcheck disable=SC2059
        printf "$FMT" "${ROWS[$i]}" "${T1[$i]}" "${TN[$i]}" "${LOST[$i]}" "${RTT[$i]}" "$rat" "$rr" "${RCPU[$i]}"
    else
        # shellcheck disable=SC2059
        printf "$FMT" "${ROWS[$i]}" "${T1[$i]}" "${TN[$i]}" "${RTT[$i]}" "$rat" "$rr" "${RCPU[$i]}"
    fi
done
echo
echo "Throughput ratio: the row's Gbit/s divided by its reference's (kernel bridge"
echo "for the overlay$( ((N2N)) && echo " and n2n"); LAN<->LAN on the same LAN switch for the bridge rows)."
echo "RTT ratio: the row's average RTT divided by its reference's."
echo "Relay CPU: the relay process's user + system time over the row's two TCP tests, in % of"
echo "one core$( ((N2N)) && echo " (n2n: its supernode's)"); '-' for the references."
if ((DIRECT_ROW >= 0)); then
    # Issue 11's targets: direct >= 0.50 of LAN<->LAN in throughput, and at
    # most 100 us of RTT added over it.
    d=$DIRECT_ROW
    added=$(awk -v a="${RTT[$d]}" -v b="${RTT[$LREF]}" 'BEGIN { if (a ~ /^[0-9]+$/ && b ~ /^[0-9]+$/) print a - b; else print "-" }')
    echo "Direct path (virtual V -> LAN L1): $(ratio "${T1[$d]}" "${T1[$LREF]}") / $(ratio "${TN[$d]}" "${TN[$LREF]}") of LAN<->LAN" \
        "(1 / $STREAMS streams; target >= 0.50), RTT +$added us over LAN<->LAN (target <= 100 us);"
    echo "  relay CPU ${RCPU[$d]} % during it, ${RCPU[$RELAYED_ROW]} % during the relayed V -> L1 row" \
        "($(ratio "${T1[$d]}" "${T1[$RELAYED_ROW]}") / $(ratio "${TN[$d]}" "${TN[$RELAYED_ROW]}") of its throughput)."
fi
for n in "${UDP_NOTES[@]}"; do echo "$n"; done
[[ -n $NOTE_BRIDGE ]] && echo "note: $NOTE_BRIDGE"
[[ -n $NOTE_N2N ]] && echo "note: $NOTE_N2N"
[[ -n $NOTE_DIRECT ]] && echo "note: $NOTE_DIRECT"
echo "run took $((SECONDS - START)) s (plus build)"
