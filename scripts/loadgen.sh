#!/usr/bin/env bash
# Load on one relay: many simulated members (examples/loadgen.rs) in one
# namespace, a real `lanbridge relay` in another, a veth between them.
# See --help.
set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
LB_PREFIX=${LB_PREFIX:-lbl$$-}
# shellcheck source=scripts/lib.sh
source "$HERE/lib.sh"

usage() {
    cat <<EOF
Usage: scripts/loadgen.sh [OPTIONS]

Starts 'lanbridge relay' in namespace ${LB_PREFIX}relay and the load
generator (examples/loadgen.rs) in ${LB_PREFIX}gen, joined by a veth
(10.213.0.1 relay, 10.213.0.2 generator). The generator runs N simulated
members, each the real member engine on its own UDP socket: they register
and keep alive; a share of them, in pairs, send frames to each other
through the relay at a chosen rate during a measuring window. It prints
the relay's RSS (VmRSS), its CPU (utime + stime, % of one core over the
window) and what it forwarded (its own counters, 'lanbridge status --json'),
and a RESULT line. Needs root and ip. Everything is removed on exit, also
on Ctrl-C.

Options (passed to the generator):
  --members N         simulated members (default 100)
  --per-network M     members per network, one relay key each (default 100)
  --active-share S    share of members sending frames, 0..1 (default 0.1)
  --rate R|max        frames a second in all in the window (default 1000)
  --size BYTES        datagram size on the wire (default 1400)
  --seconds T         measuring window (default 10)
  --join-rate J       registrations a second (default 500)
  --settle SECS       keepalives only, before the window (default 5)
  --flood-rate F      UplinkInits a second from non-members in the window
  --flood-mac1 M      bad (wrong mac1) or good (replayed real initiations)
  --flood-sources K   source sockets of the flood (default 256)
  --late-joiners L    the last L members join when the window starts
Own options:
  --no-build          use the binaries already built (target/release)
  --keep-logs DIR     copy the relay's and generator's logs there
  -h, --help          this text
EOF
}

GEN_ARGS=() MEMBERS=100 PER_NET=100 FLOOD_SOURCES=256 SECS=10 BUILD=1 KEEP_LOGS=""
while (($#)); do
    case $1 in
    -h | --help) usage; exit 0 ;;
    --no-build) BUILD=0; shift ;;
    --keep-logs) KEEP_LOGS=${2:-}; shift 2 || { usage >&2; exit 2; } ;;
    --members | --per-network | --active-share | --rate | --size | --seconds | --join-rate | \
        --settle | --flood-rate | --flood-mac1 | --flood-sources | --late-joiners)
        (($# >= 2)) || { usage >&2; exit 2; }
        case $1 in
        --members) MEMBERS=$2 ;;
        --per-network) PER_NET=$2 ;;
        --flood-sources) FLOOD_SOURCES=$2 ;;
        --seconds) SECS=$2 ;;
        esac
        GEN_ARGS+=("$1" "$2")
        shift 2
        ;;
    *) lb_log "unknown option $1"; usage >&2; exit 2 ;;
    esac
done
[[ $MEMBERS =~ ^[0-9]+$ && $PER_NET =~ ^[1-9][0-9]*$ && $FLOOD_SOURCES =~ ^[0-9]+$ ]] ||
    lb_die "--members, --per-network and --flood-sources take whole numbers"
[[ $SECS =~ ^[0-9]+([.][0-9]+)?$ ]] || lb_die "--seconds takes a number"
((EUID == 0)) || lb_die "needs root (network namespaces)"
lb_need ip timeout

TD=${CARGO_TARGET_DIR:-target}
[[ $TD = /* ]] || TD="$ROOT/$TD"
if ((BUILD)); then
    lb_log "building: cargo build --release --bin lanbridge --example loadgen (in $ROOT)"
    (cd "$ROOT" && cargo build --release --bin lanbridge --example loadgen >&2) ||
        lb_die "cargo build failed"
fi
BIN="$TD/release/lanbridge" GEN="$TD/release/examples/loadgen"
[[ -x $BIN && -x $GEN ]] || lb_die "no $BIN or $GEN (build them, or drop --no-build)"

# One socket per member, plus the flood's, plus some slack.
NOFILE=$((MEMBERS + FLOOD_SOURCES + 256))
if (($(ulimit -Sn) < NOFILE)); then
    (($(ulimit -Hn) < NOFILE)) && { ulimit -Hn "$NOFILE" || lb_die "cannot raise the open-files limit to $NOFILE"; }
    ulimit -Sn "$NOFILE" || lb_die "cannot raise the open-files limit to $NOFILE"
fi
NETS=$(((MEMBERS + PER_NET - 1) / PER_NET))
((NETS > 0)) || NETS=1

lb_install_traps
lb_workdir
if [[ -n $KEEP_LOGS ]]; then
    mkdir -p -- "$KEEP_LOGS" || lb_die "cannot create $KEEP_LOGS"
    # shellcheck disable=SC2317 # called by lb_cleanup
    lb_before_workdir_removal() { cp -- "$LB_WORK"/*.log "$KEEP_LOGS"/ 2>/dev/null; }
fi

lb_ns relay
lb_ns gen
ip link add lr netns "${LB_PREFIX}relay" type veth peer name lg netns "${LB_PREFIX}gen" ||
    lb_die "veth failed"
ip -n "${LB_PREFIX}relay" addr add 10.213.0.1/24 dev lr
ip -n "${LB_PREFIX}gen" addr add 10.213.0.2/24 dev lg
ip -n "${LB_PREFIX}relay" link set lr up
ip -n "${LB_PREFIX}gen" link set lg up

KEY_ARGS=() RELAY_KEYS=()
for ((n = 0; n < NETS; n++)); do
    "$BIN" genkey >"$LB_WORK/net-$n.key" || lb_die "lanbridge genkey failed"
    "$BIN" relay-key <"$LB_WORK/net-$n.key" >"$LB_WORK/relay-$n.key" || lb_die "lanbridge relay-key failed"
    KEY_ARGS+=(--key-file "$LB_WORK/net-$n.key")
    RELAY_KEYS+=(--key-file "$LB_WORK/relay-$n.key")
done

# Members beyond the default 1024 per network are refused by the relay.
lb_spawn relay "$LB_WORK/relay.log" "$BIN" relay --listen 0.0.0.0:7171 "${RELAY_KEYS[@]}"
RELAY_PID=$LB_LAST_PID
# shellcheck disable=SC2317 # called by lb_wait_for
status_ok() { lb_x relay "$BIN" status --json >/dev/null 2>&1; }
lb_wait_for 10 status_ok || { cat "$LB_WORK/relay.log" >&2; lb_die "the relay did not start"; }
lb_log "relay running (pid $RELAY_PID, $NETS networks); RSS before any member: $(awk '/^VmRSS/ { print $2, $3 }' "/proc/$RELAY_PID/status")"

# Bounded: joins at --join-rate plus setup, settle and window; generous.
LIMIT=$((600 + ${SECS%.*} + MEMBERS / 20))
STATUS_CMD="ip netns exec ${LB_PREFIX}relay $BIN status --json"
lb_fg "$LB_WORK/gen.log" timeout -k 2 "$LIMIT" ip netns exec "${LB_PREFIX}gen" \
    "$GEN" --relay 10.213.0.1:7171 --bind 10.213.0.2 "${KEY_ARGS[@]}" \
    --relay-pid "$RELAY_PID" --status-cmd "$STATUS_CMD" "${GEN_ARGS[@]}"
RC=$?
cat "$LB_WORK/gen.log"
if ((RC != 0)); then
    lb_log "the generator failed (exit $RC); relay log tail:"
    tail -n 20 "$LB_WORK/relay.log" >&2
fi
lb_log "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$RC"
