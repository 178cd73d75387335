#!/usr/bin/env bash
# Runs lanbridge's cargo-fuzz targets (fuzz/fuzz_targets) one after another,
# each for a bounded time, starting from its committed seeds
# (fuzz/seeds/TARGET) plus a scratch corpus (fuzz/corpus/TARGET, gitignored,
# kept between runs), and prints per target how many inputs it ran and
# whether it crashed. A crash leaves its input in fuzz/artifacts/TARGET/ and
# the log in fuzz/artifacts/TARGET.log; the exit status is then 1.
#
# Needs a nightly toolchain (cargo-fuzz builds with sanitizers) and
# cargo-fuzz, which it installs with `cargo install cargo-fuzz --locked`
# when missing. Without nightly it says so and exits with status 2.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/fuzz.sh [--time SECS] [TARGET...]

Builds and runs every fuzz target (or only the TARGETs named), SECS seconds
each (default 60), one after another, from fuzz/seeds/TARGET plus the
scratch corpus fuzz/corpus/TARGET. Prints the executions per target and
whether it crashed.
  --time SECS   fuzzing time per target, in whole seconds (default 60)
  -h, --help    this text
Exit status: 0 no crash, 1 a target crashed (input in fuzz/artifacts/TARGET/),
2 bad usage or no nightly toolchain.
Reproduce a crash: cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...
USAGE
}

secs=60
targets=()
while (($#)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --time) secs=${2:-}; shift $(($# > 1 ? 2 : 1)) ;;
        --time=*) secs=${1#--time=}; shift ;;
        -*) echo "error: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
if ! [[ $secs =~ ^[1-9][0-9]*$ ]]; then
    echo "error: --time takes a whole number of seconds, at least 1 (got '${secs}')" >&2
    exit 2
fi

cd "$(dirname "$0")/.."

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "error: no nightly Rust toolchain: cargo-fuzz needs one (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== cargo-fuzz is missing: cargo install cargo-fuzz --locked"
    cargo install cargo-fuzz --locked
fi

mapfile -t all < <(cargo +nightly fuzz list)
if ((${#all[@]} == 0)); then
    echo "error: cargo fuzz list found no targets in fuzz/" >&2
    exit 2
fi
if ((${#targets[@]} == 0)); then
    targets=("${all[@]}")
else
    for t in "${targets[@]}"; do
        if ! printf '%s\n' "${all[@]}" | grep -qxF -- "$t"; then
            echo "error: no fuzz target '$t' (there are: ${all[*]})" >&2
            exit 2
        fi
    done
fi

echo "== building ${targets[*]}"
if ((${#targets[@]} == ${#all[@]})); then
    cargo +nightly fuzz build
else
    for t in "${targets[@]}"; do cargo +nightly fuzz build "$t"; done
fi

# A run may overrun max_total_time by loading its corpus and by one slow
# input (-timeout); past this margin it is stopped and counted as hung.
margin=120
crashed=()
summary=()
for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    seeds=()
    if [[ -d fuzz/seeds/$t ]]; then seeds=("fuzz/seeds/$t"); fi
    log=fuzz/artifacts/$t.log
    echo "== $t: ${secs}s from ${seeds[*]:-no seeds} + $corpus"
    rc=0
    timeout --kill-after=10 $((secs + margin)) \
        cargo +nightly fuzz run "$t" "$corpus" "${seeds[@]}" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    execs=${execs:-?}
    if ((rc == 0)); then
        line="$t: $execs executions in ${secs}s, no crash"
    else
        crashed+=("$t")
        if ((rc == 124 || rc == 137)); then
            what="HUNG (stopped after $((secs + margin))s)"
        else
            what="CRASHED"
        fi
        input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        why=$(grep -m 1 -E "panicked at|ERROR: (libFuzzer|AddressSanitizer)" -A 1 "$log" |
            tr '\n' ' ' | cut -c 1-300)
        line="$t: $what after $execs executions: ${why:-see the log}; input ${input:-none}; log $log"
    fi
    echo "   $line"
    summary+=("$line")
done

echo
echo "== summary"
printf '   %s\n' "${summary[@]}"
if ((${#crashed[@]})); then
    echo "crashed: ${crashed[*]} (reproduce: cargo +nightly fuzz run TARGET INPUT)"
    exit 1
fi
