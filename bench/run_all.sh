#!/usr/bin/env bash
# Runs every benchmark of issue 3 in one sequence and writes bench/results/summary.md: about 12
# minutes on the 2-core machine, plus a one-off install of the Alibi/scikit-learn venv (bench/alibi.sh).
#
#   bash bench/run_all.sh          # results in bench/results/ (JSON, logs, summary.md)
#   bash bench/run_all.sh --docs   # ... and refresh the tables in docs/benchmarks.md
#
# ALIBI_VERSIONS="0.5.5 0.9.6" also compares with a second Alibi version (about one more minute).
# Other processes on the machine skew the timings: each result records the load average.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
RESULTS=bench/results
ALIBI_VERSIONS="${ALIBI_VERSIONS:-0.5.5}"
SKLEARN_VENV_VERSION="${ALIBI_VERSIONS%% *}"
export TF_CPP_MIN_LOG_LEVEL=2 KERAS_HOME="$PWD/.cache/keras"

# Only this script's own results: bench/results/drift/ and sql_history.* belong to other benchmarks.
mkdir -p "$RESULTS"
find "$RESULTS" -maxdepth 1 -type f ! -name 'sql_history.*' -delete
rm -rf "$RESULTS/models" "$RESULTS/ig_reference" "$RESULTS/extra"
for version in $ALIBI_VERSIONS; do
    echo "== bench/alibi.sh $version (one-off install; log in $RESULTS/alibi-install-$version.log)"
    bash bench/alibi.sh "$version" >"$RESULTS/alibi-install-$version.log" 2>&1 \
        || echo "!! Alibi $version did not install; the comparison reports the error"
done

failed=0
run() {
    local name=$1
    shift
    local started=$SECONDS
    echo "== $name: $PY $*"
    if "$PY" "$@" 2>&1 | tee "$RESULTS/$name.log" | { grep --line-buffered -E '^\[|^wrote' || true; }; then
        echo "$name $((SECONDS - started))" >>"$RESULTS/durations.txt"
    else
        echo "!! $name failed; the end of $RESULTS/$name.log:"
        tail -n 20 "$RESULTS/$name.log"
        failed=1
    fi
}

started=$SECONDS
run methods bench/methods.py
run chunks bench/chunks.py
run ig_vs_loop bench/ig_vs_loop.py
for version in $ALIBI_VERSIONS; do
    run "alibi_ig-$version" bench/alibi_ig.py --alibi-version "$version"
done
run permutation_vs_sklearn bench/permutation_vs_sklearn.py --alibi-version "$SKLEARN_VENV_VERSION"
run memory bench/memory.py
echo "total $((SECONDS - started))" >>"$RESULTS/durations.txt"
"$PY" bench/report.py "$@"
echo "== whole run: $((SECONDS - started)) s; tables in $RESULTS/summary.md"
exit "$failed"
