#!/usr/bin/env bash
# det-tiny fine-tuned at camera resolution (640x360), with the clean-image reference fine-tuned on the
# same footage as the fair yardstick; the figures in docs/video.md ("At 640×360"). About 1 h 30 of
# CPU on a 2-core machine: footage 3 min, each fine-tune 10-20 min, each eval 7-25 min.
#
#   bash scripts/camera_resolution_finetune.sh [RUNS_DIR]   # default runs/camera640
#
# 1. the task models alone: det-tiny's task model on its frozen codec's output (same bitstreams) and
#    the reference, 300 steps each on the same footage; both scored on the 640x360 and 256x192 clips;
# 2. det-tiny's codec and task model jointly from (1), then its P model trained on from the shipped one.
set -euo pipefail
R=${1:-runs/camera640}
LC=.venv/bin/layercast
PY=.venv/bin/python
TUNE=(--data "$R/footage" --steps 300 --batch-size 4 --lr 3e-4 --seed 1 --ckpt-every 25)
mkdir -p "$R"
[ -d data/clips640 ] || $LC data clips --out data/clips640 --cameras 8 --frames 60 --size 640x360
[ -d data/clips256 ] || $LC data clips --out data/clips256 --cameras 8 --frames 60 --size 256x192
[ -d "$R/footage" ] || $LC data footage --out "$R/footage" --cameras 150 --frames 8 --every 5 --size 640x360

# 1. task models alone
$LC train base --task detection --lmbda 0.05 --beta 0.002 --init shared/zoo/det-tiny.pt --freeze-codec \
    --out "$R/task" "${TUNE[@]}"
$LC train task --task detection --task-init shared/zoo/tasks/detection.pt --out "$R/reference" "${TUNE[@]}"
$PY scripts/swap_task_model.py "$R/task/model.pt" --out "$R/models" --name det-tiny640
LAYERCAST_MODELS=$R/models $LC eval det-tiny640 --clips data/clips640 --video-codecs x264,x265 \
    --task-ref detection="$R/reference/task.pt" --skip-thresholds 0.25,0.3,0.4 --deadzones 0.6 --out "$R/eval640"
LAYERCAST_MODELS=$R/models $LC eval det-tiny640 --clips data/clips256 --video-codecs x264,x265 \
    --task-ref detection="$R/reference/task.pt" --skip-thresholds 0.25,0.3,0.35,0.4 --deadzones 0.6 --out "$R/eval256"

# 2. codec and task model jointly, then the P model on the new base
$LC train base --task detection --lmbda 0.05 --beta 0.002 --init "$R/task/model.pt" --out "$R/joint" "${TUNE[@]}"
# the new base with its integer entropy model (derived at load), and the shipped P model as the start
$PY - "$R" <<'EOF'
import sys
from dataclasses import replace
from pathlib import Path
from layercast.shared.codec import load_codec
from layercast.shared.codec.registry import default_registry

runs = Path(sys.argv[1])
codec = load_codec(str(runs / "joint/model.pt"), enhancement=None, temporal=None, device="cpu")
codec.base_ckpt.path = None
base_id = codec.base_ckpt.save(runs / "joint-models/det-tiny-joint.pt")
p = default_registry().load("det-tiny-temporal")
replace(p, path=None, temporal={**p.temporal, "base_model_id": base_id}).save(runs / "joint-p-start.pt")
EOF
$LC train temporal --base "$R/joint-models/det-tiny-joint.pt" --init "$R/joint-p-start.pt" --out "$R/joint-p" \
    --sizes 512x288,640x360 --steps 300 --lr 2e-4 --skip-threshold 0.3 --deadzone 0.6 --seed 1
cp "$R/joint-p/temporal.pt" "$R/joint-models/det-tiny-joint-temporal.pt"
LAYERCAST_MODELS=$R/joint-models $LC eval det-tiny-joint --clips data/clips640 --video-codecs x264,x265 \
    --task-ref detection="$R/reference/task.pt" --baselines "$R/eval640/clips_detection_640x360.json" \
    --skip-thresholds 0.25,0.3,0.4 --deadzones 0.6 --out "$R/eval640-joint"
