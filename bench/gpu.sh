#!/usr/bin/env bash
# The full PTB protocol on a GPU with the project defaults, timed: iteration speed, then
# training to STEPS iterations, then `textebm evaluate` (10,000 samples, 5-gram FPPL/RPPL, NLL,
# latent diagnostics). Prints JSON lines; the run folder keeps eval.json.
#
#   bash bench/gpu.sh                       # one GPU, 40,000 iterations
#   STEPS=2000 NPROC=8 bash bench/gpu.sh    # eight GPUs under torchrun, 2,000 iterations
#   DEVICE=cpu STEPS=4 ITERS=1 EVAL_SAMPLES=50 NLL_SENTENCES=5 DIAG_SENTENCES=20 bash bench/gpu.sh
#                                           # a dry run of the script on CPU
#
# Needs PTB where the loaders find it ($TEXTEBM_DATA, --data-dir or the cache).
set -euo pipefail
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-40000}
NPROC=${NPROC:-1}
ITERS=${ITERS:-20}
EVAL_SAMPLES=${EVAL_SAMPLES:-10000}
NLL_SENTENCES=${NLL_SENTENCES:-0}        # 0: the whole test split
DIAG_SENTENCES=${DIAG_SENTENCES:-500}
PRECISION=${PRECISION:-auto}             # auto: bf16 where the device runs it fast
COMPILE=${COMPILE:-0}                    # 1: train and evaluate with --compile (prior chain compiled)
OUT=${OUT:-runs/gpu-ptb-$(date +%Y%m%d-%H%M%S)}
DATA=${TEXTEBM_DATA:-../shared/data}
cd "$(dirname "$0")/.."

python bench/train_step.py --data "$DATA/ptb/ptb.train.txt" --device "$DEVICE" --iters "$ITERS" --posterior paper \
  --modes ours --precision "$PRECISION"
python bench/train_step.py --data "$DATA/ptb/ptb.train.txt" --device "$DEVICE" --iters "$ITERS" --posterior encoder \
  --modes ours,ours+compile --precision "$PRECISION"
COMPILE_FLAG=$([ "$COMPILE" = 1 ] && echo --compile || true)

start=$(date +%s)
if [ "$NPROC" -gt 1 ]; then
  torchrun --standalone --nproc_per_node="$NPROC" "$(command -v textebm)" train ptb \
    --device "$DEVICE" --precision "$PRECISION" --max-steps "$STEPS" --out "$OUT" --quiet $COMPILE_FLAG
else
  textebm train ptb --device "$DEVICE" --precision "$PRECISION" --max-steps "$STEPS" --out "$OUT" --quiet $COMPILE_FLAG
fi
trained=$(date +%s)
textebm evaluate --checkpoint "$OUT" --device "$DEVICE" --precision "$PRECISION" $COMPILE_FLAG --num-samples "$EVAL_SAMPLES" \
  --nll-sentences "$NLL_SENTENCES" --diag-sentences "$DIAG_SENTENCES" --json > "$OUT/evaluate.out.json"
done_at=$(date +%s)
python - "$OUT" "$STEPS" "$NPROC" $((trained - start)) $((done_at - trained)) <<'PY'
import json, sys
out, steps, nproc, train_s, eval_s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ev = json.load(open(f"{out}/eval.json"))
print(json.dumps({"bench": "gpu_protocol", "run": out, "steps": steps, "processes": nproc,
                  "train_seconds": train_s, "iters_per_sec": steps / max(train_s, 1),
                  "eval_seconds": eval_s, "fppl": ev["fppl"], "rppl": ev["rppl"],
                  "nll": ev.get("nll", {}).get("nll"), "gap": ev.get("latent", {}).get("gap_nats_tok")}))
PY
