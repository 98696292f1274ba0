#!/usr/bin/env bash
# Submit one padnet-dist phase (or any padnet-dist command) to a Ray cluster as a Ray job.
#
#   RAY_ADDRESS=http://HEAD:8265 cluster/ray_submit.sh ray-train --config configs/cityscapes.yaml phase=1 \
#       data.train_manifest=s3://bucket/cityscapes/train.manifest.json run.dir=s3://bucket/runs/city1 \
#       --num-workers 16 --use-gpu --max-failures 3
#
# The repository is uploaded as the job's working directory (files in .gitignore are left out), so the job
# runs this checkout's code; torch, deepspeed and ray must already be installed on every node.
# RAY_JOB_ARGS adds `ray job submit` options, e.g. RAY_JOB_ARGS="--no-wait" or
# RAY_JOB_ARGS='--runtime-env-json {"env_vars":{"NCCL_DEBUG":"WARN"}}' (a working_dir given there replaces ours).
set -euo pipefail

if [[ $# -eq 0 ]]; then
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
address="${RAY_ADDRESS:-http://127.0.0.1:8265}"
python="${RAY_JOB_PYTHON:-python}"  # the interpreter on the cluster nodes

# shellcheck disable=SC2086  # RAY_JOB_ARGS is a list of options
exec ray job submit --address "$address" --working-dir "$repo" ${RAY_JOB_ARGS:-} \
    -- "$python" -m padnet_dist.cli "$@"
