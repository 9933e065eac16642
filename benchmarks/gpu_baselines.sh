#!/usr/bin/env bash
# The full-schema baseline on every BFCL test example at 200 and at 20 active tools, on a lent GPU (issue 6,
# section 3): ≈ 21 h and ≈ 8 h of the 2-core CPU one example at a time, minutes on a GPU in left-padded batches
# (`eval --baseline-batch-size`). The 200-tool run goes first: the CPU cannot do it.
#
# $STASH (see gpu_setup.sh; `bash benchmarks/gpu_pack.sh` makes its three parts) also holds journals.tar.xz:
# the CPU's eval journals, bl20/ and bl200/, with the router's records on every example. `eval --resume` reuses
# them, so the GPU makes only the baseline records still missing, and a run cut off by the budget loses only
# its last batch. Results: $OUT/journals.tar.xz (every journal: unpack it over the CPU's folders and run the
# same eval with --resume there for the report) and $OUT/run.log.
#
#     bash benchmarks/gpu_baselines.sh [budget seconds, default 540]     (LIMIT=n: n examples per category)
set -u
BUDGET=${1:-540}
BATCH=${BATCH:-32}
source "$(dirname "$0")/gpu_setup.sh" || exit 1
JOURNALS=reports/journals
rm -rf "$JOURNALS" && mkdir -p "$JOURNALS" && tar -xJf "$STASH/journals.tar.xz" -C "$JOURNALS" || exit 1

for tools in 200 20; do
    seconds=$(left)
    [ "$seconds" -gt 30 ] || { say "full-schema @ $tools tools skipped (no time left)"; continue; }
    timeout "$seconds" $TFR eval --checkpoint default --data-dir data/prepared_synthetic --split test \
        --tools-per-query "$tools" --baselines full-schema --baseline-batch-size "$BATCH" --device "$DEVICE" \
        --resume --out "$JOURNALS/bl$tools/summary.json" ${LIMIT:+--limit "$LIMIT"} > "reports/bl$tools.txt" 2>&1
    status=$?
    records=$(($(wc -l < "$JOURNALS/bl$tools/summary.full-schema-test.journal.jsonl") - 1))
    say "full-schema @ $tools tools: exit $status, $records records in the journal"
    tail -c 1500 "reports/bl$tools.txt" | tr '\r' '\n' | tail -12 | tee -a "$OUT/run.log"
done
tar -cJf "$OUT/journals.tar.xz" -C "$JOURNALS" bl20 bl200
ls -la "$OUT" | tee -a "$OUT/run.log"
