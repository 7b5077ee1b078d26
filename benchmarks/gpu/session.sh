#!/usr/bin/env bash
# The GPU benchmarks as one prepared run, for a machine lent for a few minutes: each stage
# has its own time limit and writes its log as it goes, so a stage that fails or runs out
# of time loses only itself.
#
#   bash benchmarks/gpu/session.sh DATASET OUT [SCALE]
#
# DATASET: a folder from benchmarks/real/prepare_*.py (NEU-Seg in docs/benchmarks.md);
# OUT: where the logs, figures and the trained U-Net go; SCALE (default 1) multiplies every
# time limit and training budget (a dry run on a 2-core CPU: 0.5 with STAGES="unet predict",
# which reaches each stage's figures; at 0.05 every stage ends at its limit of a few
# seconds). STAGES (environment, default
# all) names the stages to run, in their order here, e.g. STAGES="throughput nccl".
# Stages: the environment; the U-Net trained on DATASET with its GPU schedule cut to a
# budget (`budget_min`) that fits the lease, scored on the test images beside the
# no-learning reference; training throughput (samples/s, GPU memory, data waits, with 0
# and 4 loader processes); prediction MP/s; Mask R-CNN trained and scored on DATASET;
# distributed training's NCCL path with one process (a machine with one GPU).
# Experiments, run only when named in STAGES: "grid" (training samples/s of the U-Net at
# 128 px for each batch size in GRID, default "4 16 64", with 0, 4 and 8 loader processes) and "batches"
# (the U-Net trained on DATASET as in "unet", once per batch size in BATCHES, default
# "4 16", each scored on the test images).
set -u
data=$1 out=$2 scale=${3:-1}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
secs() { awk -v s="$1" -v k="$scale" 'BEGIN { v = int(s * k); print (v < 5 ? 5 : v) }'; }
mins() { awk -v m="$1" -v k="$scale" 'BEGIN { print m * k }'; }
stage() {  # stage NAME LOG SECONDS COMMAND...: COMMAND's output added to OUT/LOG.log, within
    local name=$1 log=$2 limit; limit=$(secs "$3"); shift 3  # the limit (few files come back)
    [[ " ${STAGES:-$name} " == *" $name "* ]] || return 0
    local t0=$SECONDS
    echo "== $name" >> "$out/$log.log"
    timeout -k 5 "$limit" "$@" >> "$out/$log.log" 2>&1
    local rc=$?
    echo "stage $name: rc $rc, $((SECONDS - t0)) s (limit $limit s)" | tee -a "$out/stages.log"
}

{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  nproc; "$py" -c 'import sys, torch, torchvision, numpy, skimage, shapely
print(sys.version.split()[0], "torch", torch.__version__, "torchvision", torchvision.__version__,
      "numpy", numpy.__version__, "skimage", skimage.__version__, "shapely", shapely.__version__,
      "cuda", torch.cuda.is_available())'; } > "$out/stages.log" 2>&1

stage unet unet 300 "$py" benchmarks/real/bench_real.py "$data" --models unet --tta unet \
    --ensemble none --set "budget_min=$(mins 2.75)" --out /tmp/gpu-models --json "$out/unet.json"
cp /tmp/gpu-models/unet.pt "$out/unet.pt" 2>/dev/null
[[ " ${STAGES:-} " == *" grid "* ]] && stage grid grid 150 "$py" benchmarks/bench_train_throughput.py \
    --steps 20 --grid "$(echo ${GRID:-4 16 64} | tr ' ' ,)" --tile 128 --workers 0,4,8
if [[ " ${STAGES:-} " == *" batches "* ]]; then
    for b in ${BATCHES:-4 16}; do
        stage batches "unet-b$b" 240 "$py" benchmarks/real/bench_real.py "$data" --models unet \
            --tta none --ensemble none --set "budget_min=$(mins 2.5)" --set "batch=$b" \
            --out "/tmp/gpu-b$b" --json "$out/unet-b$b.json"
    done
fi
stage throughput bench 80 "$py" benchmarks/bench_train_throughput.py --steps 20 --workers 0,4
stage predict bench 45 "$py" benchmarks/bench_predict.py --images 4 --rounds 3
stage maskrcnn maskrcnn 110 "$py" benchmarks/real/bench_real.py "$data" --models maskrcnn --tta none \
    --ensemble none --set "budget_min=$(mins 0.8)" --out /tmp/gpu-models \
    --json "$out/maskrcnn.json"
stage nccl bench 100 "$py" benchmarks/bench_distributed.py --nproc 1 --device auto --torchrun --steps 30
