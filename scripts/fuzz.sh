#!/usr/bin/env bash
# Runs lanbridge's cargo-fuzz targets (fuzz/fuzz_targets) one after another,
# each for a bounded time (or a number of executions), starting from its
# committed seeds (fuzz/seeds/TARGET) plus a scratch corpus
# (fuzz/corpus/TARGET, gitignored, kept between runs), and prints per
# target how many inputs it ran, how fast, and whether it crashed. A crash leaves its input in fuzz/artifacts/TARGET/ and
# the log in fuzz/artifacts/TARGET.log; the exit status is then 1.
#
# Needs a nightly toolchain (cargo-fuzz builds with sanitizers) and
# cargo-fuzz, which it installs with `cargo install cargo-fuzz --locked`
# when missing. Without nightly it says so and exits with status 2.
#
# The targets of protocol version 2 need every input to run the same
# handshakes: fuzz/common/mod.rs routes `getrandom` to a deterministic
# source, which takes `--cfg getrandom_backend="custom"` in RUSTFLAGS (set
# here; cargo-fuzz appends RUSTFLAGS to its own flags). `--seeds` rewrites
# their generated seeds (fuzz/seeds/TARGET/gen-*) with fuzz/examples/seeds.rs.
#
# Sanitizer: none by default. The code under test is safe Rust (the one
# `unsafe` in src/core is a volatile write that erases keys), so
# AddressSanitizer finds next to nothing there, and it made the targets
# 2 to 5 times slower (datagram 9,900 against 25,000 executions a second,
# client 173 against 798 from the same seeds on the same machine). Without it the fuzz build keeps what
# catches Rust's bugs: panics, debug assertions and overflow checks
# (cargo fuzz builds with -Cdebug-assertions unless told --release).
# `--sanitizer address` builds with ASan, e.g. to look at a crash in C code
# (ring) or in a dependency's unsafe code. Each sanitizer has its own
# build directory (fuzz/target, fuzz/target/nosan), so switching does not
# rebuild everything.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/fuzz.sh [--time SECS | --runs N] [--sanitizer none|address] [TARGET...]
       scripts/fuzz.sh --seeds

Builds and runs every fuzz target (or only the TARGETs named), SECS seconds
each (default 60), one after another, from fuzz/seeds/TARGET plus the
scratch corpus fuzz/corpus/TARGET. Prints the executions per target and
whether it crashed.
  --time SECS   fuzzing time per target, in whole seconds (default 60)
  --runs N      instead, N executions per target, however long they take
                (e.g. --runs 10000000)
  --sanitizer S none (default: overflow checks and debug assertions, no
                ASan, several times faster) or address (AddressSanitizer)
  --seeds       only rewrite the generated seeds (fuzz/seeds/*/gen-*) from an
                in-memory run (fuzz/examples/seeds.rs), then exit
  -h, --help    this text
Exit status: 0 no crash, 1 a target crashed (input in fuzz/artifacts/TARGET/),
2 bad usage or no nightly toolchain.
Reproduce a crash: cargo +nightly fuzz run -s none --target-dir fuzz/target/nosan \
    TARGET fuzz/artifacts/TARGET/crash-...   (or without the first two options, ASan)
USAGE
}

secs=60
runs=
sanitizer=none
targets=()
seeds_only=0
while (($#)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --seeds) seeds_only=1; shift ;;
        --time) secs=${2:-}; shift $(($# > 1 ? 2 : 1)) ;;
        --time=*) secs=${1#--time=}; shift ;;
        --runs) runs=${2:-}; shift $(($# > 1 ? 2 : 1)) ;;
        --runs=*) runs=${1#--runs=}; shift ;;
        --sanitizer | -s) sanitizer=${2:-}; shift $(($# > 1 ? 2 : 1)) ;;
        --sanitizer=*) sanitizer=${1#--sanitizer=}; shift ;;
        -*) echo "error: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
if ! [[ $secs =~ ^[1-9][0-9]*$ ]]; then
    echo "error: --time takes a whole number of seconds, at least 1 (got '${secs}')" >&2
    exit 2
fi
if [[ -n $runs ]] && ! [[ $runs =~ ^[1-9][0-9]*$ ]]; then
    echo "error: --runs takes a whole number of executions, at least 1 (got '${runs}')" >&2
    exit 2
fi
case $sanitizer in
    none) fuzz_opts=(-s none --target-dir fuzz/target/nosan) ;;
    address) fuzz_opts=(-s address) ;;
    *)
        echo "error: --sanitizer takes none or address (got '${sanitizer}')" >&2
        exit 2
        ;;
esac

cd "$(dirname "$0")/.."

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "error: no nightly Rust toolchain: cargo-fuzz needs one (rustup toolchain install nightly)" >&2
    exit 2
fi
# See the header: deterministic random draws in the fuzz builds.
export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }--cfg getrandom_backend=\"custom\""
# AddressSanitizer without allocation stacks and fake stacks: about a
# quarter more executions a second for the protocol targets (a report then
# lacks the allocation's stack; rerun the input with ASAN_OPTIONS= for it).
export ASAN_OPTIONS="${ASAN_OPTIONS-malloc_context_size=0:detect_stack_use_after_return=0}"

if ((seeds_only)); then
    echo "== writing the generated seeds (fuzz/examples/seeds.rs)"
    RUSTFLAGS="$RUSTFLAGS --cfg fuzzing" cargo +nightly run --release \
        --manifest-path fuzz/Cargo.toml --target-dir "${CARGO_TARGET_DIR:-fuzz/target}/seeds-gen" \
        --example seeds -- fuzz/seeds
    exit 0
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

echo "== building ${targets[*]} (sanitizer: $sanitizer)"
if ((${#targets[@]} == ${#all[@]})); then
    cargo +nightly fuzz build "${fuzz_opts[@]}"
else
    for t in "${targets[@]}"; do cargo +nightly fuzz build "${fuzz_opts[@]}" "$t"; done
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
    rc=0
    start=$SECONDS
    if [[ -n $runs ]]; then
        echo "== $t: $runs executions from ${seeds[*]:-no seeds} + $corpus"
        cargo +nightly fuzz run "${fuzz_opts[@]}" "$t" "$corpus" "${seeds[@]}" -- \
            -runs="$runs" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || rc=$?
    else
        echo "== $t: ${secs}s from ${seeds[*]:-no seeds} + $corpus"
        timeout --kill-after=10 $((secs + margin)) \
            cargo +nightly fuzz run "${fuzz_opts[@]}" "$t" "$corpus" "${seeds[@]}" -- \
            -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || rc=$?
    fi
    took=$((SECONDS - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    execs=${execs:-?}
    if ((rc == 0)); then
        line="$t: $execs executions in ${took}s (${rate:-?}/s, sanitizer $sanitizer), no crash"
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
    echo "crashed: ${crashed[*]} (reproduce: cargo +nightly fuzz run ${fuzz_opts[*]} TARGET INPUT)"
    exit 1
fi
