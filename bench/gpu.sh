#!/usr/bin/env bash
# The device checks of one lent GPU, run from the project root (no snakemake there: the unet_core CLI).
#
#   bash bench/gpu.sh isbi  OUT   # ISBI 2012 (.data/isbi2012): five full-width trainings side by side
#                                 # (paper SGD with and without the weight average, Adam with it and
#                                 # three seeds), then TTA prediction + evaluation of slices 16-19 (the
#                                 # validation split), each and the mean of the Adam runs (a seed ensemble);
#                                 # last.pt everywhere: best.pt was chosen on slices 16-19 themselves
#   bash bench/gpu.sh preset OUT  # bench/train.py at batch 1, then config/isbi2012.yaml's training as is
#                                 # on slices 0-15, TTA prediction (last.pt) + evaluation of 16-19; with
#                                 # SEEDS=N, N seeds side by side and also their ensemble (`ensemble: N`)
#   bash bench/gpu.sh cv OUT      # 5-fold cross-validation of config/isbi2012.yaml's recipe on the 20
#                                 # labelled slices: the folds train side by side, then TTA prediction,
#                                 # segmentation and scoring of each fold's 4 slices, and their summary
#                                 # (CV_THRESHOLDS="0.3": also segmented at these watershed thresholds;
#                                 # NORM=batch: the recipe with batch norm, as the CPU recipe trains;
#                                 # CPU_AUG=1: with config/isbi2012_cpu.yaml's gray-value strengths)
#   bash bench/gpu.sh hela OUT    # DIC-HeLa (.data/dic-hela, or $HELA_DATA): config/dic_hela.yaml's
#                                 # training as is (the paper's network, best.pt by validation SEG), TTA
#                                 # prediction, then each segment method cut and scored by SEG on the
#                                 # validation frames t039, t054, t067
#   bash bench/gpu.sh bench OUT   # bench/train.py (batch 1 and 8) and bench/predict.py (eager, compiled)
#   bash bench/gpu.sh all OUT     # one lease: hela (OUT/hela) and the five cv folds (OUT/cv) side by side,
#                                 # sized so the six trainings share TRAIN_SECONDS (default 210); then
#                                 # bench/predict.py compiled and eager in the time DEADLINE (seconds
#                                 # after the start, default 520) leaves; OUT/all.tgz holds the runs' files
#
# TRAIN_SECONDS (default 240) is the wall time the trainings share; their iteration counts are sized
# from the full-loop tiles/s that bench/train.py measures first (batch 1 and 4, alone on the GPU).
# ITERATIONS (cv) and HELA_ITERATIONS (hela) set the counts instead; WORKERS the loader processes per run.
# SMOKE=1 runs everything tiny on a CPU.
#
# One lease (15 device-minutes, the start included): the data copied to .data/isbi2012 and .data/dic-hela
# (git-ignored), wheels from `../shared/tools/gpu-wheels.sh toolz cloudpickle fsspec click`, then one
# call with carry [".whl", ".data"] and a 580 s limit:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#     .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; export PYTHONUNBUFFERED=1; set -o pipefail;
#   TRAIN_SECONDS=200 DEADLINE=520 bash bench/gpu.sh all $OUT 2>&1 | tee $OUT/log
# (first H200 lease: that call took 441 s, then `ITERATIONS=4000 WORKERS=2 bash bench/gpu.sh cv` 271 s, of
# which 168 s trained the five folds side by side; 8000 iterations, about 340 s of training, fit one call.)
# Next lease, two such calls: `ITERATIONS=8000 WORKERS=2 bash bench/gpu.sh cv $OUT/plain` (the paper's
# recipe), then the same with `NORM=batch CPU_AUG=1` and `$OUT/cpu_recipe` (the CPU ladder's winners).
set -uo pipefail
stage=${1:?isbi, preset, cv, hela, all or bench}
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
start_of_script=$(date +%s)
# Full-loop tiles/s of one training alone on the device (bench/train.py), printed to stderr as well.
loop_rate() {  # batch
  python3 bench/train.py "${bench_net[@]}" --batch "$1" --steps 30 --workers "$workers" --threads 2 |
    tee /dev/stderr | awk '/full loop/ {for (i = 2; i <= NF; i++) if ($i == "tiles/s") print $(i - 1)}'
}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
# Both outputs a user gets are scored: the probabilities (method unet) and the cells that segment makes
# of them with config/isbi2012.yaml's settings (method segmentation).
read -ra segment_options < <(python3 -c "
import yaml
from unet_core.cli import config_flags
print(' '.join(config_flags(yaml.safe_load(open('config/isbi2012.yaml'))['segment'])))")
score() {  # name: pred_<name>.ome.zarr -> seg_<name>.ome.zarr and m_<name>/metrics.csv
  run segment "${segment_options[@]}" "$work/pred_$1.ome.zarr" "$work/seg_$1.ome.zarr" >/dev/null 2>&1 &&
    run evaluate --slices held-out --segmentation "$work/seg_$1.ome.zarr" --out "$work/m_$1/metrics.csv" \
      "$work/pred_$1.ome.zarr" "$work/isbi.ome.zarr" >/dev/null 2>&1
}

if [ "$stage" = isbi ]; then
  budget=${TRAIN_SECONDS:-240}
  # name | train options; all runs share the GPU side by side for $budget seconds. The weight average
  # leaves the training itself unchanged: paper and paper_ema differ only in the weights validated.
  # (Earlier recipes, measured: --norm batch / group, no rotation or gray-value augmentation; README.)
  variants=(
    "paper|--batch-size 1 --optimizer sgd --lr 0.01 --momentum 0.99"
    "paper_ema|--batch-size 1 --optimizer sgd --lr 0.01 --momentum 0.99 --ema 0.999"
    "adam_ema|--batch-size 4 --optimizer adam --lr 0.0002 --ema 0.999"
    "adam_ema_seed1|--batch-size 4 --optimizer adam --lr 0.0002 --ema 0.999 --seed 1"
    "adam_ema_seed2|--batch-size 4 --optimizer adam --lr 0.0002 --ema 0.999 --seed 2"
  )
  declare -A rate
  for batch in 1 4; do
    log "bench/train.py, batch $batch (sizes the trainings)"
    rate[$batch]=$(loop_rate "$batch")
    [[ "${rate[$batch]}" =~ ^[0-9.]+$ ]] || { log "bench/train.py failed: no rate to size the trainings"; exit 1; }
  done
  run prepare --data-dir .data/isbi2012 --raw train-volume.tif --labels train-labels.tif \
    --train-slices 0 16 --val-slices 16 20 --test-slices 20 20 --voxel-size 50 4 4 --unit nanometer \
    --w0 10 --sigma 5 "$work/isbi.ome.zarr" || exit 1
  n=${#variants[@]}
  start=$(date +%s)
  for variant in "${variants[@]}"; do
    name=${variant%%|*}
    read -ra options <<<"${variant#*|}"
    batch=${options[1]}
    # Each run gets 1/n of the GPU: a little under 1/n of the rate measured alone at its batch size.
    iterations=$(python3 -c "print(max(8, int($budget * ${rate[$batch]} * 0.9 / $n / $batch)))")
    log "$name: $iterations iterations of batch $batch"
    run train "${net[@]}" "${options[@]}" --schedule cosine --iterations "$iterations" \
      --val-every "$(((iterations + 11) / 12))" --num-workers "$((workers / 2 + 1))" --threads 2 \
      "$work/isbi.ome.zarr" "$work/model_$name" >"$out/train_$name.log" 2>&1 &
  done
  wait
  log "all trainings done in $(($(date +%s) - start)) s (wall, side by side)"
  names=()
  for variant in "${variants[@]}"; do
    name=${variant%%|*}
    tail -n 2 "$out/train_$name.log"
    [ -f "$work/model_$name/last.pt" ] || continue
    names+=("$name")
    cp "$work/model_$name/train_log.csv" "$out/train_log_$name.csv"
    run predict --tta "$work/model_$name/last.pt" "$work/isbi.ome.zarr" "$work/pred_$name.ome.zarr" \
      >"$out/predict_$name.log" 2>&1 &
  done
  wait
  # The mean of the Adam runs' probabilities: the ensemble `ensemble: 3` in the workflow would predict.
  python3 - "$work" "${names[@]}" <<'PY'
import shutil, sys
import numpy as np, zarr
work, names = sys.argv[1], [n for n in sys.argv[2:] if n.startswith("adam")]
if names:
    shutil.copytree(f"{work}/pred_{names[0]}.ome.zarr", f"{work}/pred_ensemble.ome.zarr")
    mean = np.mean([zarr.open_array(f"{work}/pred_{n}.ome.zarr/0", mode="r")[:] for n in names], axis=0)
    zarr.open_array(f"{work}/pred_ensemble.ome.zarr/0", mode="r+")[:] = np.round(mean).astype(np.uint8)
    print("ensemble of", names)
PY
  [ -d "$work/pred_ensemble.ome.zarr" ] && names+=(ensemble)
  for name in "${names[@]}"; do
    score "$name" &
  done
  wait
  for name in "${names[@]}"; do
    echo "== $name, TTA, validation slices 16-19" | tee -a "$out/metrics.csv"
    tee -a "$out/metrics.csv" <"$work/m_$name/metrics.csv" | grep -E "_error,|n_split|n_merge|vrand|vinfo"
    awk -F, '$NF == "unet" {printf "rand@%s %.4f  ", $1, $4} END {print ""}' \
      "$work/m_$name/metrics_per_threshold.csv" | tee -a "$out/metrics.csv"
  done
  tar czf "$out/runs.tgz" -C "$out" --remove-files $(cd "$out" && ls train_* predict_*)  # few files come back
elif [ "$stage" = cv ]; then
  folds=${FOLDS:-5}
  budget=${TRAIN_SECONDS:-300}
  if [ -n "${ITERATIONS:-}" ]; then
    rate=$(python3 -c "print($ITERATIONS * $folds / 0.9 / $budget)")  # sizes to ITERATIONS below
  else
    log "bench/train.py, batch 1 (sizes the trainings)"
    rate=$(loop_rate 1)
    [[ "$rate" =~ ^[0-9.]+$ ]] || { log "bench/train.py failed: no rate to size the trainings"; exit 1; }
  fi
  # config/isbi2012.yaml's train section as flags, the iterations sized so the folds share the budget.
  read -ra train_options < <(python3 -c "
import yaml
from unet_core.cli import config_flags
train = yaml.safe_load(open('config/isbi2012.yaml'))['train']
if $smoke: train.update(depth=2, width=8, tile_size=124)
batch = train.get('batch_size', 1)
train.update(iterations=max(8, round($budget * $rate * 0.9 / $folds / batch)),
             num_workers=${WORKERS:-max(1, $workers // $folds)})
train['val_every'] = max(1, train['iterations'] // 10)
if '${NORM:-}': train['norm'] = '${NORM:-}'
if '${CPU_AUG:-}':
    cpu = yaml.safe_load(open('config/isbi2012_cpu.yaml'))['train']
    train.update({key: value for key, value in cpu.items() if key.startswith('aug_')})
print(' '.join(config_flags(train)))")
  log "train ${train_options[*]}"
  run prepare --data-dir .data/isbi2012 --raw train-volume.tif --labels train-labels.tif \
    --train-slices 0 16 --val-slices 16 20 --test-slices 20 20 --voxel-size 50 4 4 --unit nanometer \
    --w0 10 --sigma 5 "$work/isbi.ome.zarr" >/dev/null 2>&1 || exit 1
  start=$(date +%s)
  for ((k = 0; k < folds; k++)); do
    run train "${train_options[@]}" --fold "$k/$folds" --threads 2 "$work/isbi.ome.zarr" "$work/fold$k" \
      >"$out/train_fold$k.log" 2>&1 &
  done
  wait
  log "$folds folds trained in $(($(date +%s) - start)) s (wall, side by side)"
  for ((k = 0; k < folds; k++)); do  # last.pt, as the workflow's predict_fold: best.pt chose on these slices
    run predict --tta "$work/fold$k/last.pt" "$work/isbi.ome.zarr" "$work/pred_fold$k.ome.zarr" \
      >"$out/predict_fold$k.log" 2>&1 &
  done
  wait
  logs=()
  for ((k = 0; k < folds; k++)); do
    logs+=("$work/fold$k/train_log.csv")
  done
  # The configured cut, and with CV_THRESHOLDS="0.3 ..." the same watershed at other thresholds (the
  # predictions are made once): each its own cross-validated summary, cv/ and cv_t<threshold>/.
  for cut in "" ${CV_THRESHOLDS:-}; do
    options=("${segment_options[@]}") suffix=""
    [ -n "$cut" ] && options+=(--threshold "$cut") suffix="_t$cut"
    for ((k = 0; k < folds; k++)); do
      (run segment "${options[@]}" "$work/pred_fold$k.ome.zarr" "$work/seg_fold$k$suffix.ome.zarr" &&
        run evaluate --slices "fold:$k/$folds" --segmentation "$work/seg_fold$k$suffix.ome.zarr" \
          --out "$work/m_fold$k$suffix/metrics.csv" "$work/pred_fold$k.ome.zarr" "$work/isbi.ome.zarr") \
        >/dev/null 2>&1 &
    done
    wait
    metrics=()
    for ((k = 0; k < folds; k++)); do
      metrics+=("$work/m_fold$k$suffix/metrics.csv")
    done
    log "cross-validated, segment ${options[*]}"
    run crossval "$out/cv$suffix" --metrics "${metrics[@]}" --train-logs "${logs[@]}" 2>&1 | tail -n 40
  done
  tar czf "$out/runs.tgz" -C "$out" --remove-files $(cd "$out" && ls train_* predict_*)  # few files come back
elif [ "$stage" = preset ]; then
  seeds=${SEEDS:-1}
  log "bench/train.py, batch 1 (the paper's setup)"
  python3 bench/train.py "${bench_net[@]}" --batch 1 --steps 200 --workers "$workers" --threads 2 --contended
  # config/isbi2012.yaml's train section as flags, as the workflow passes it (SMOKE: a tiny run instead).
  read -ra train_options < <(python3 -c "
import yaml
from unet_core.cli import config_flags
train = yaml.safe_load(open('config/isbi2012.yaml'))['train']
if $smoke: train.update(depth=2, width=8, tile_size=124, iterations=20, val_every=10, num_workers=1)
if $seeds > 1: train.update(num_workers=max(1, train['num_workers'] // $seeds))  # the CPUs are shared
print(' '.join(config_flags(train)))")
  log "train ${train_options[*]}"
  run prepare --data-dir .data/isbi2012 --raw train-volume.tif --labels train-labels.tif \
    --train-slices 0 16 --val-slices 16 20 --test-slices 20 20 --voxel-size 50 4 4 --unit nanometer \
    --w0 10 --sigma 5 "$work/isbi.ome.zarr" >/dev/null 2>&1 || exit 1
  # SEEDS > 1: the members of `ensemble: SEEDS` (seeds seed, seed + 1, ...), side by side on the GPU.
  start=$(date +%s)
  base_seed=$(python3 -c "import yaml; print(yaml.safe_load(open('config/isbi2012.yaml'))['train'].get('seed', 0))")
  members=()
  for ((k = 0; k < seeds; k++)); do
    run train "${train_options[@]}" --seed "$((base_seed + k))" --threads 2 "$work/isbi.ome.zarr" \
      "$work/model$k" >"$out/train$k.log" 2>&1 &
    members+=("$work/model$k/last.pt")
  done
  wait
  log "$seeds training(s) done in $(($(date +%s) - start)) s (wall, side by side)"
  evaluate() {  # name, checkpoints...
    local name=$1
    shift
    run predict --tta "$@" "$work/isbi.ome.zarr" "$work/pred_$name.ome.zarr" 2>&1 | tail -n 1
    score "$name"
    echo "== $name, TTA, validation slices 16-19" | tee -a "$out/metrics.csv"
    tee -a "$out/metrics.csv" <"$work/m_$name/metrics.csv" | grep -E "^(unet|segmentation),.*(_error,|n_split|n_merge|vrand|vinfo)"
    awk -F, '$NF == "unet" {printf "rand@%s %.4f  ", $1, $4} END {print ""}' \
      "$work/m_$name/metrics_per_threshold.csv"
  }
  for ((k = 0; k < seeds; k++)); do
    tail -c 400 "$out/train$k.log"
    cp "$work/model$k/train_log.csv" "$out/train_log$k.csv"
    evaluate "seed$((base_seed + k))" "${members[k]}"
  done
  [ "$seeds" -gt 1 ] && evaluate ensemble "${members[@]}"
  tar czf "$out/runs.tgz" -C "$out" --remove-files $(cd "$out" && ls train*)  # few files come back
elif [ "$stage" = hela ]; then
  # config/dic_hela.yaml's prepare, train and segment sections as flags, as the workflow passes them
  # (validation segments with the segment options; SMOKE: a tiny network instead).
  config_options() {  # section
    python3 -c "
import yaml
from unet_core.cli import VALIDATION_SEGMENT, config_flags
config = yaml.safe_load(open('config/dic_hela.yaml'))
config['prepare']['data_dir'] = '${HELA_DATA:-.data/dic-hela}'
if '${HELA_ITERATIONS:-}':
    iterations = int('${HELA_ITERATIONS:-0}')
    config['train'].update(iterations=iterations, val_every=max(1, iterations // 20))
if '${WORKERS:-}':
    config['train']['num_workers'] = int('${WORKERS:-0}')
if $smoke:
    config['train'].update(depth=2, width=8, tile_size=124, iterations=20, val_every=10, num_workers=1)
flags = config_flags(config['$1'])
if '$1' == 'train':
    flags += config_flags(config['segment'], prefix=VALIDATION_SEGMENT)
print(' '.join(flags))"
  }
  read -ra prepare_options < <(config_options prepare)
  read -ra train_options < <(config_options train)
  read -ra configured < <(config_options segment)
  run prepare "${prepare_options[@]}" "$work/hela.ome.zarr" >"$out/prepare.log" 2>&1 || exit 1
  log "train ${train_options[*]}"
  start=$(date +%s)
  run train "${train_options[@]}" --threads 2 "$work/hela.ome.zarr" "$work/model" >"$out/train.log" 2>&1
  log "training done in $(($(date +%s) - start)) s (wall)"
  tail -c 400 "$out/train.log"
  cp "$work/model/train_log.csv" "$out/train_log.csv" && cat "$out/train_log.csv"
  run predict --tta "$work/model/best.pt" "$work/hela.ome.zarr" "$work/pred.ome.zarr" 2>&1 | tail -n 1
  # The configured cut, then the others that validation SEG chose between (README).
  variants=(
    "configured|${configured[*]}"
    "watershed|--method watershed --threshold 0.5 --seed-threshold 0.9 --min-size 500"
    "distance_h1|--method distance --threshold 0.5 --seed-height 1 --min-size 500"
    "distance_h4|--method distance --threshold 0.5 --seed-height 4 --min-size 500"
    "components|--method components --threshold 0.5 --min-size 500"
  )
  for variant in "${variants[@]}"; do
    name=${variant%%|*}
    read -ra options <<<"${variant#*|}"
    run segment "${options[@]}" "$work/pred.ome.zarr" "$work/seg_$name.ome.zarr" >/dev/null 2>&1 &&
      run evaluate --segmentation "$work/seg_$name.ome.zarr" --out "$work/m_$name/metrics.csv" \
        "$work/pred.ome.zarr" "$work/hela.ome.zarr" >/dev/null 2>&1
    echo "== $name (${options[*]}), TTA, validation frames t039 t054 t067" | tee -a "$out/metrics.csv"
    tee -a "$out/metrics.csv" <"$work/m_$name/metrics.csv" | grep -E ",(seg|foreground_iou|dice),"
  done
  cp "$work/m_configured/metrics_per_slice.csv" "$out/metrics_per_frame.csv"
elif [ "$stage" = all ]; then
  budget=${TRAIN_SECONDS:-210}
  deadline=${DEADLINE:-520}
  log "bench/train.py, batch 1 (sizes the six trainings)"
  rate=$(loop_rate 1)
  [[ "$rate" =~ ^[0-9.]+$ ]] || { log "bench/train.py failed: no rate to size the trainings"; exit 1; }
  # Six runs of batch 1 share the device (and its host's cores: two loader processes each).
  iterations=$(python3 -c "print(max(8, int($budget * $rate * 0.9 / 6)))")
  log "hela and 5 cv folds: $iterations iterations each"
  HELA_ITERATIONS=$iterations WORKERS=2 bash "$0" hela "$out/hela" >"$out/hela.log" 2>&1 &
  ITERATIONS=$iterations WORKERS=2 bash "$0" cv "$out/cv" >"$out/cv.log" 2>&1 &
  wait
  tail -n 30 "$out/hela.log" "$out/cv.log"
  # Few files come back from a lent machine: the trainings' files travel as one archive.
  tar czf "$out/all.tgz" -C "$out" --remove-files hela cv hela.log cv.log
  # A quarter of the default volume: the no-op rows alone would take minutes at 32 x 2048 x 2048.
  bench_shape=("${predict_bench[@]}")
  bench_shape[1]=$((predict_bench[1] / 4))
  for mode in --compile ""; do  # the compiled model is the ceiling the pipeline is held to
    left=$((deadline - ($(date +%s) - start_of_script)))
    log "bench/predict.py ${mode:-eager} ($left s left)"
    [ "$left" -gt 30 ] && timeout "$left" python3 bench/predict.py "${bench_shape[@]}" --threads 4 $mode --skip-memory
  done
else
  for batch in 1 8; do
    log "bench/train.py, batch $batch"
    python3 bench/train.py "${bench_net[@]}" --batch "$batch" --steps 40 --workers "$workers" --threads 2 --contended
  done
  log "bench/predict.py, eager"
  python3 bench/predict.py "${predict_bench[@]}" --threads 4
  log "bench/predict.py, torch.compile"
  timeout 240 python3 bench/predict.py "${predict_bench[@]}" --threads 4 --compile --skip-memory
fi
rm -rf "$work"
log "done"
