#!/usr/bin/env bash
# The device checks of one lent GPU, run from the project root (no snakemake there: the unet_core CLI).
#
#   bash bench/gpu.sh isbi  OUT   # ISBI 2012 (.data/isbi2012): two full-width trainings side by side,
#                                 # then TTA prediction + evaluation of slices 16-19 (the validation split)
#   bash bench/gpu.sh bench OUT   # bench/train.py (batch 1 and 8) and bench/predict.py (eager, compiled)
#
# TRAIN_SECONDS (default 240) is the wall time the two trainings share; their iteration count is sized
# from the full-loop tiles/s that bench/train.py measures first. SMOKE=1 runs everything tiny on a CPU.
set -uo pipefail
stage=${1:?isbi or bench}
out=${2:?output folder}
mkdir -p "$out"
work=$(mktemp -d)
smoke=${SMOKE:-0}
run() { python3 -m unet_core "$@"; }
log() { echo "[$(date +%T)] $*"; }

if [ "$smoke" = 1 ]; then
  net=(--depth 2 --width 8 --tile-size 124)
  bench_net=(--depth 2 --width 8 --tile 124)
  workers=1
  predict_bench=(--shape 4 256 256 --block 1 128 128 --depth 2 --width 8)
else
  net=(--depth 4 --width 64 --tile-size 572)
  bench_net=(--depth 4 --width 64 --tile 572)
  workers=7
  predict_bench=(--shape 32 2048 2048 --block 1 1024 1024 --depth 4 --width 64)
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

if [ "$stage" = isbi ]; then
  budget=${TRAIN_SECONDS:-240}
  log "bench/train.py, batch 4 (sizes the trainings)"
  rate=$(python3 bench/train.py "${bench_net[@]}" --batch 4 --steps 30 --workers "$workers" --threads 2 \
    | tee /dev/stderr | awk '/full loop/ {for (i = 2; i <= NF; i++) if ($i == "tiles/s") print $(i - 1)}')
  [[ "$rate" =~ ^[0-9.]+$ ]] || { log "bench/train.py failed: no rate to size the trainings"; exit 1; }
  # Two runs share the GPU: each is given a little under half the measured rate.
  iterations=$(python3 -c "print(max(20, int($budget * $rate * 0.45 / 4)))")
  val_every=$(python3 -c "print(max(5, $iterations // 8))")
  log "full loop ${rate} tiles/s -> ${iterations} iterations of batch 4, validation every ${val_every}"
  run prepare --data-dir .data/isbi2012 --raw train-volume.tif --labels train-labels.tif \
    --train-slices 0 16 --val-slices 16 20 --test-slices 20 20 --voxel-size 50 4 4 --unit nanometer \
    --w0 10 --sigma 5 "$work/isbi.ome.zarr" || exit 1
  start=$(date +%s)
  for variant in a:0.0002 b:0.0006; do
    name=${variant%%:*}
    run train "${net[@]}" --batch-size 4 --optimizer adam --lr "${variant#*:}" --schedule cosine \
      --iterations "$iterations" --val-every "$val_every" --num-workers "$workers" --threads 2 \
      "$work/isbi.ome.zarr" "$work/model_$name" >"$out/train_$name.log" 2>&1 &
  done
  wait
  log "both trainings done in $(($(date +%s) - start)) s (wall, side by side)"
  for name in a b; do
    tail -n 2 "$out/train_$name.log"
    cp "$work/model_$name/train_log.csv" "$out/train_log_$name.csv"
    cp "$work/model_$name/training_curves.png" "$out/training_curves_$name.png"
    for tta in no-tta tta; do
      run predict --"$tta" "$work/model_$name/best.pt" "$work/isbi.ome.zarr" "$work/pred_${name}_$tta.ome.zarr" \
        2>&1 | tail -n 1
      run evaluate --slices held-out --out "$work/m_${name}_$tta/metrics.csv" \
        "$work/pred_${name}_$tta.ome.zarr" "$work/isbi.ome.zarr" >/dev/null 2>&1
      echo "== model $name, $tta, validation slices 16-19" | tee -a "$out/metrics.csv"
      tee -a "$out/metrics.csv" <"$work/m_${name}_$tta/metrics.csv" | grep -E "_error,|vrand|vinfo"
    done
  done
else
  for batch in 1 8; do
    log "bench/train.py, batch $batch"
    python3 bench/train.py "${bench_net[@]}" --batch "$batch" --steps 40 --workers "$workers" --threads 2
  done
  log "bench/predict.py, eager"
  python3 bench/predict.py "${predict_bench[@]}" --threads 4
  log "bench/predict.py, torch.compile"
  timeout 240 python3 bench/predict.py "${predict_bench[@]}" --threads 4 --compile --skip-memory
fi
rm -rf "$work"
log "done"
