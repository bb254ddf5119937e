#!/usr/bin/env bash
# The full PTB protocol on one GPU in at most TOTAL_MINUTES (10): Algorithm 1 iterations timed at
# batch 64 (bench/train_step.py), then `textebm train ptb` to STEPS (40,000) iterations at batch
# 64, then the full `textebm evaluate` (10,000 samples, 5-gram FPPL/RPPL, NLL on the whole test
# split with log Z by AIS at 40,000 temperatures, latent diagnostics on 500 test sentences).
# Every step reads PTB from DATA (--data-dir). Prints JSON lines; the last one is the summary:
# iterations reached, seconds per phase, the parts of the evaluation that finished, FPPL, RPPL,
# NLL, gap, and whether it all fit.
#
# The time is held to, not hoped for: training stops at TRAIN_MINUTES if STEPS take longer
# (`--time-budget`; the summary says how many iterations ran), and the evaluation gets what is
# left of TOTAL_MINUTES (then SIGTERM: it keeps the parts it finished in eval.json). On one H100
# the estimate is about 8 minutes of training (docs/performance.md, "GPU"); not yet measured.
#
#   bash bench/gpu.sh                                    # one GPU, 40,000 iterations, 10 minutes
#   TOTAL_MINUTES=30 TRAIN_MINUTES=20 bash bench/gpu.sh  # a slower card
#   STEPS=2000 NPROC=8 bash bench/gpu.sh                 # eight GPUs under torchrun
#   DEVICE=cpu STEPS=4 ITERS=1 EVAL_SAMPLES=50 NLL_SENTENCES=5 DIAG_SENTENCES=20 \
#     LOGZ_TEMPERATURES=200 TOTAL_MINUTES=15 bash bench/gpu.sh   # a dry run of the script on CPU
#
# Needs PTB in DATA ($TEXTEBM_DATA, default ../shared/data): DATA/ptb/ptb.{train,valid,test}.txt.
set -euo pipefail
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-40000}
BATCH=${BATCH:-64}
NPROC=${NPROC:-1}
ITERS=${ITERS:-20}                       # timed iterations of bench/train_step.py (0: skip)
TOTAL_MINUTES=${TOTAL_MINUTES:-10}
TRAIN_MINUTES=${TRAIN_MINUTES:-7}        # training stops here even short of STEPS
EVAL_SAMPLES=${EVAL_SAMPLES:-10000}
NLL_SENTENCES=${NLL_SENTENCES:-0}        # 0: the whole test split
DIAG_SENTENCES=${DIAG_SENTENCES:-500}
LOGZ_TEMPERATURES=${LOGZ_TEMPERATURES:-40000}
PRECISION=${PRECISION:-auto}             # auto: bf16 where the device runs it fast
COMPILE=${COMPILE:-0}                    # 1: --compile (off the GPU's CUDA-graph prior chain)
EVAL_EVERY=${EVAL_EVERY:-0}              # validations while training (0: none; evaluate follows)
SAVE_EVERY=${SAVE_EVERY:-10000}
THREADS=${THREADS:-0}                    # CPU threads of torch (0: its default)
# Absolute before the cd below, which a relative DATA would not survive.
DATA=$(realpath -m "${TEXTEBM_DATA:-../shared/data}")
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-ptb-$(date +%Y%m%d-%H%M%S)}
if [ ! -f "$DATA/ptb/ptb.train.txt" ]; then
  echo "bench/gpu.sh: no PTB in $DATA (set TEXTEBM_DATA to a folder holding ptb/)" >&2
  exit 2
fi
start=$(date +%s)
COMPILE_FLAG=$([ "$COMPILE" = 1 ] && echo --compile || true)

bench_s=0
if [ "$ITERS" -gt 0 ]; then
  python -m bench.train_step --data "$DATA/ptb/ptb.train.txt" --device "$DEVICE" --batch-size "$BATCH" \
    --iters "$ITERS" --posterior coherent --batches bucketed --modes "ours$([ "$COMPILE" = 1 ] && echo +compile || true)" \
    --precision "$PRECISION" --threads "$THREADS"
  bench_s=$(( $(date +%s) - start ))
fi

train_args=(train ptb --data-dir "$DATA" --device "$DEVICE" --precision "$PRECISION" --max-steps "$STEPS"
            --time-budget "$TRAIN_MINUTES" --batch-size "$BATCH" --eval-every "$EVAL_EVERY"
            --save-every "$SAVE_EVERY" --threads "$THREADS" --out "$OUT" --quiet $COMPILE_FLAG)
train_start=$(date +%s)
if [ "$NPROC" -gt 1 ]; then
  torchrun --standalone --nproc_per_node="$NPROC" "$(command -v textebm)" "${train_args[@]}"
else
  textebm "${train_args[@]}"
fi
trained=$(date +%s)

# What is left of the total, less half a minute for the kill-after grace and the summary.
eval_limit=$(( TOTAL_MINUTES * 60 - (trained - start) - 30 ))
eval_rc=0
if [ "$eval_limit" -gt 0 ]; then
  timeout --signal=TERM --kill-after=20 "$eval_limit" \
    textebm evaluate --checkpoint "$OUT" --data-dir "$DATA" --device "$DEVICE" --precision "$PRECISION" \
      $COMPILE_FLAG --num-samples "$EVAL_SAMPLES" --nll-sentences "$NLL_SENTENCES" \
      --diag-sentences "$DIAG_SENTENCES" --logz-temperatures "$LOGZ_TEMPERATURES" --json \
      > "$OUT/evaluate.out.json" || eval_rc=$?
else
  eval_rc=124
fi
done_at=$(date +%s)
python - "$OUT" "$STEPS" "$NPROC" "$BATCH" "$DEVICE" "$TOTAL_MINUTES" "$bench_s" \
  $((trained - train_start)) $((done_at - trained)) $((done_at - start)) "$eval_rc" <<'PY'
import json, os, sys
(out, steps, nproc, batch, device, total_min, bench_s, train_s, eval_s, total_s,
 eval_rc) = sys.argv[1:]
steps, train_s, eval_s, total_s = int(steps), int(train_s), int(eval_s), int(total_s)


def read(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


summary, ev = read("summary.json"), read("eval.json")
done = summary.get("step", 0)
card = None
if device.startswith("cuda"):
    import torch
    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
print(json.dumps({
    "bench": "gpu_protocol", "run": out, "device": device, "card": card, "processes": int(nproc),
    "batch_size": int(batch), "steps_target": steps, "steps_done": done,
    "reached_target": done >= steps, "bench_seconds": int(bench_s), "train_seconds": train_s,
    "iters_per_sec": round(done / max(train_s, 1), 2),
    "projected_40k_minutes": round(40000 / max(done / max(train_s, 1), 1e-9) / 60, 1) if done else None,
    "eval_seconds": eval_s, "eval_exit": int(eval_rc), "eval_parts_done": ev.get("seconds", {}),
    "total_seconds": total_s, "within_budget": total_s <= 60 * float(total_min) and int(eval_rc) == 0,
    "fppl": ev.get("fppl"), "rppl": ev.get("rppl"), "nll": (ev.get("nll") or {}).get("nll"),
    "gap": (ev.get("latent") or {}).get("gap_nats_tok")}))
PY
