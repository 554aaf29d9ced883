#!/usr/bin/env bash
# Scheduled batch inference on one machine: the same job the cluster's CronJob runs
# (infra/k8s/ray/batch-infer-cronjob.yaml), against a local Ray and the embedded MLflow store.
#
# It takes the new-data prefix, the folder of the day under the inbox (INBOX/YYYY-MM-DD, UTC by
# default), and predicts its videos with the champion model into OUT_ROOT/YYYY-MM-DD. Run it as
# often as you like (cron/systemd: hourly): batch_infer.py skips videos already predicted in that
# folder, and a lock keeps two runs from overlapping. A day without a folder is not an error.
#
#   infra/local/run_scheduled_inference.sh [--date YYYY-MM-DD] [--inbox DIR] [--out-root DIR]
#                                          [--model URI] [--dry-run] [-- extra batch_infer flags]
#
# Environment (all optional): CAST_INBOX, CAST_PREDICTIONS, CAST_MODEL, CAST_BATCH_SIZE,
# CAST_NUM_CLIPS, CAST_LOCK_DIR, PYTHON (default: the repository's .venv), MLFLOW_TRACKING_URI
# (default: the project's embedded store, sqlite:///<repo>/data/mlflow/mlflow.db), RAY_ADDRESS
# (default: a local Ray, started by batch_infer.py). Against the local cluster stack, source
# data/cluster/env.sh first: it sets the tracking server, its login, the S3 endpoint and the Ray
# cluster; --out-root may then be s3://$CAST_BUCKET/predictions.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

day="$(date -u +%Y-%m-%d)"
inbox="${CAST_INBOX:-$repo/data/inbox}"
out_root="${CAST_PREDICTIONS:-$repo/data/predictions}"
model="${CAST_MODEL:-models:/cast-ssv2@champion}"
batch_size="${CAST_BATCH_SIZE:-8}"
test_clips="${CAST_NUM_CLIPS:-2}"
dry_run=0
extra=()

usage() { sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "run_scheduled_inference: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --date) [[ $# -ge 2 ]] || die "--date needs a value"; day="$2"; shift 2 ;;
        --inbox) [[ $# -ge 2 ]] || die "--inbox needs a value"; inbox="$2"; shift 2 ;;
        --out-root) [[ $# -ge 2 ]] || die "--out-root needs a value"; out_root="$2"; shift 2 ;;
        --model) [[ $# -ge 2 ]] || die "--model needs a value"; model="$2"; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

# A wrong date must fail loudly, not silently look for a folder that can never exist.
[[ "$day" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ ]] || die "--date must be YYYY-MM-DD, got '$day'"
date -u -d "$day" +%F >/dev/null 2>&1 || die "--date '$day' is not a calendar date"
[[ "$batch_size" =~ ^[1-9][0-9]*$ ]] || die "CAST_BATCH_SIZE must be a positive integer, got '$batch_size'"
[[ "$test_clips" =~ ^[1-9][0-9]*$ ]] || die "CAST_NUM_CLIPS must be a positive integer, got '$test_clips'"

prefix="$inbox/$day"
out="$out_root/$day"
if [[ ! -d "$prefix" ]]; then
    echo "run_scheduled_inference: no new-data prefix $prefix: nothing to do"
    exit 0
fi

python_bin="${PYTHON:-}"
if [[ -z "$python_bin" ]]; then
    if [[ -x "$repo/.venv/bin/python" ]]; then python_bin="$repo/.venv/bin/python"; else python_bin=python3; fi
fi
# An absolute store: Ray workers run in other working directories (see workflows/).
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$repo/data/mlflow/mlflow.db}"

cmd=("$python_bin" "$repo/workflows/batch_infer.py"
     --model "$model" --input "$prefix" --out "$out"
     --test-clips "$test_clips" --test-crops 3 --batch-size "$batch_size"
     ${extra[@]+"${extra[@]}"})

if [[ "$dry_run" -eq 1 ]]; then
    echo "MLFLOW_TRACKING_URI=$MLFLOW_TRACKING_URI"
    printf '%q ' "${cmd[@]}"; echo
    exit 0
fi

# The lock lives beside the outputs, or, for an object-store OUT_ROOT (s3://...), under the repository's
# data/ (CAST_LOCK_DIR): one machine schedules the runs either way.
if [[ "$out_root" == *://* ]]; then
    lock_dir="${CAST_LOCK_DIR:-$repo/data}"
else
    lock_dir="${CAST_LOCK_DIR:-$out_root}"
fi
mkdir -p "$lock_dir"
lock="$lock_dir/.batch-infer.lock"
exec 9>"$lock"
if ! flock -n 9; then
    echo "run_scheduled_inference: another run holds $lock: skipping this one"
    exit 0
fi
echo "run_scheduled_inference: $(date -u +%FT%TZ) predicting $prefix -> $out with $model"
cd "$repo"
"${cmd[@]}"
