#!/usr/bin/env bash
# Builds lanbridge and runs 'lanbridge demo' as root. See --help.
set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

usage() {
    cat <<EOF
Usage: scripts/demo.sh [--keep]

Builds a release binary (cargo build --release) and runs 'lanbridge demo' as
root (through sudo when not root already). The demo builds, in network
namespaces on this machine, a physical LAN (lan1, lan2 and a bridge host
running 'lanbridge bridge'), an "internet" with a relay, and two virtual
hosts running 'lanbridge edge'; then it shows, step by step, ARP and ping
between LAN and virtual hosts and what the LAN's neighbour tables hold.
Everything is removed when it ends, also on Ctrl-C.

Options (passed on to 'lanbridge demo'):
  --keep       leave everything running after the tour, print commands to
               explore it, and remove it on Ctrl-C
  -h, --help   this text

Needs: cargo, iproute2, ping, arping; root or sudo.
EOF
}

for a in "$@"; do
    case $a in
    -h | --help) usage; exit 0 ;;
    --keep) ;;
    *) printf 'unknown argument: %s\n' "$a" >&2; usage >&2; exit 2 ;;
    esac
done

command -v cargo >/dev/null 2>&1 || { echo "error: cargo not found" >&2; exit 1; }
echo "building: cargo build --release (in $ROOT)" >&2
(cd "$ROOT" && cargo build --release >&2) || { echo "error: cargo build --release failed" >&2; exit 1; }
TD=${CARGO_TARGET_DIR:-target}
[[ $TD = /* ]] || TD="$ROOT/$TD"
BIN="$TD/release/lanbridge"
[[ -x $BIN ]] || { echo "error: no executable lanbridge at $BIN" >&2; exit 1; }

# exec: Ctrl-C and SIGTERM go straight to the demo, which cleans up.
if ((EUID == 0)); then
    exec "$BIN" demo "$@"
fi
command -v sudo >/dev/null 2>&1 || { echo "error: the demo needs root; run this as root" >&2; exit 1; }
exec sudo -- "$BIN" demo "$@"
