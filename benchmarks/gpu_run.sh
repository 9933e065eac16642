#!/usr/bin/env bash
# One prepared run on a lent GPU (issue 6, section 4), inside a 10-minute command of a 15-minute device lease:
#   1. engine speed on the GPU: bench_engine.py at 5/20/200/1000 tools (the packaged default, the GPU alone);
#   2. the GPU tests (tests/test_gpu.py), beside the training;
#   3. three GPU recipes trained at once (configs/default.yaml, gpu_parallel.yaml, gpu_lora.yaml);
#   4. each evaluated with `toolformer-router eval` on validation at 20 tools while time is left (the packaged
#      default too, on the same GPU). In stop 13 the trainings took 4.5 min and these evaluations did not finish
#      (a shared GPU decodes at ~1.5 s per example): validation and test ran on the CPU afterwards.
# The choice between the recipes is made on validation alone (benchmarks/RESULTS.md, "On a lent GPU (stop 13)").
#
# The device machine lacks this project's other dependencies, the backbone and the data: benchmarks/gpu_setup.sh
# installs them from $STASH, which earlier calls filled (its header says what goes there; data.tar.xz holds
# data/prepared_synthetic and data/prepared_parallel here). Results go to $OUT (at most 8 files).
#
#     bash benchmarks/gpu_run.sh [budget seconds, default 540]
set -u
BUDGET=${1:-540}
source "$(dirname "$0")/gpu_setup.sh" || exit 1

# ---------------------------------------------------------------- 1. engine speed, the GPU to itself
[ -n "${SKIP_BENCH:-}" ] || timeout 100 python3 benchmarks/bench_engine.py --device "$DEVICE" --tool-counts 5,20,200,1000 --repeats 10 \
    --out reports/bench_engine_gpu.json > reports/bench_engine_gpu.txt 2>&1
say "bench_engine exit $?"
tail -8 reports/bench_engine_gpu.txt | tee -a "$OUT/run.log"
# the route path against the engine before its redesign (24a0614), side by side (needs the git history)
if [ -z "${SKIP_BENCH:-}" ] && git rev-parse -q --verify 24a0614 > /dev/null; then
    timeout 150 python3 benchmarks/bench_route_compare.py --old-ref 24a0614 --device "$DEVICE" \
        --tool-counts 5,20,200,1000 --repeats 10 --out reports/route_compare_gpu.json > reports/route_compare_gpu.txt 2>&1
    say "bench_route_compare exit $?"
    tail -8 reports/route_compare_gpu.txt | tee -a "$OUT/run.log"
fi

# ---------------------------------------------------------------- 2 + 3. GPU tests and the three recipes
(timeout 200 python3 -P -m pytest -q -p no:cacheprovider tests/test_gpu.py > reports/pytest_gpu.txt 2>&1;
 echo "pytest exit $?" >> reports/pytest_gpu.txt) &
evaluate() {  # name checkpoint "split@tools ...": each evaluation while time is left
    local name=$1 checkpoint=$2 splits=$3
    for run in $splits; do
        local split=${run%@*} tools=${run#*@}
        local seconds; seconds=$(left)
        [ "$seconds" -gt 20 ] || { say "$name $run skipped (no time)"; continue; }
        timeout "$seconds" $TFR eval --checkpoint "$checkpoint" --data-dir data/prepared_synthetic --split "$split" \
            --tools-per-query "$tools" --device "$DEVICE" --batch-size 32 \
            --out "reports/$name/${split}_$tools/summary.json" > "reports/$name.${split}_$tools.txt" 2>&1
        say "$name $run eval exit $?"
    done
}
for variant in default gpu_parallel gpu_lora; do
    (timeout "$(left)" $TFR train --config "configs/$variant.yaml" > "reports/train_$variant.txt" 2>&1
     say "train $variant exit $?"
     [ -f "runs/$variant/checkpoint/config.json" ] && evaluate "$variant" "runs/$variant/checkpoint" "validation@20") &
done
evaluate packaged default "validation@20" &
wait
say "all done"

# ---------------------------------------------------------------- results (at most 8 files)
for variant in default gpu_parallel gpu_lora; do
    [ -d "runs/$variant" ] && tar -cf "$OUT/$variant.tar" -C runs "$variant/checkpoint" "$variant/log.jsonl" \
        2>/dev/null
done
tar -cJf "$OUT/reports.tar.xz" reports
ls -la "$OUT" | tee -a "$OUT/run.log"
