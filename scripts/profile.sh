#!/usr/bin/env bash
# Where the time goes in lanbridge's core, counted in instructions.
#
# Runs the core micro-benchmark (benches/core.rs: a fixed replay of frames
# through the sealer, the relay, the client and the NAT engine, no I/O) under
# valgrind's callgrind and prints the functions that execute the most
# instructions. Instruction counts repeat run to run whatever else the
# machine does, unlike timings. Where `perf stat -e instructions true` works
# (hardware counters), it also prints perf's own count for the same run.
#
# For the live system (kernel time, syscalls, copies), sample a running
# benchmark with perf's software clock instead, which works without hardware
# counters:  perf record -e cpu-clock -a -g -- sleep 5  (while scripts/bench.sh runs)
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/profile.sh [--scale N] [--top N] [FILTER...]

Profiles the core micro-benchmark under callgrind (instruction counts).
  --scale N   run 1/N of the benchmark's frames (default 20; callgrind is ~50x slower)
  --top N     functions to show (default 25)
  FILTER      only cases whose name contains FILTER (e.g. "super-frame", "nat")
Needs valgrind (apt-get install valgrind) and cargo.
USAGE
}

scale=20
top=25
filters=()
while (($#)); do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --scale) scale=${2:?--scale needs a number}; shift 2 ;;
        --top) top=${2:?--top needs a number}; shift 2 ;;
        --*) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
        *) filters+=("$1"); shift ;;
    esac
done
command -v valgrind >/dev/null || { echo "error: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }

cd "$(dirname "$0")/.."
bin=$(cargo bench --bench core --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "core" and m.get("executable"):
        print(m["executable"])')
[[ -x "$bin" ]] || { echo "error: could not build the core benchmark" >&2; exit 1; }

out=$(mktemp -d /tmp/lanbridge-profile-XXXXXX)
trap 'rm -rf "$out"' EXIT
echo "== callgrind: $bin --scale $scale ${filters[*]}"
valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" "$bin" --scale "$scale" "${filters[@]}" 2>"$out/valgrind.log" |
    sed 's/^/  /'
total=$(grep -m1 '^summary:\|^totals:' "$out/cg.out" | awk '{print $2}')
echo
echo "== instructions: ${total:-?} in all; by function (self), top $top"
callgrind_annotate --inclusive=no "$out/cg.out" 2>/dev/null |
    awk '/^-+$/ {n++} n>=3' | grep -v '^-' | sed '/^$/d' | head -n "$top"

if perf stat -e instructions true >/dev/null 2>&1 &&
    ! perf stat -e instructions true 2>&1 | grep -q 'not supported'; then
    echo
    echo "== perf stat (hardware counters)"
    perf stat -e instructions,cycles "$bin" --scale "$scale" "${filters[@]}" >/dev/null
else
    echo
    echo "(perf stat: hardware counters not supported here; the counts above are callgrind's)"
fi
