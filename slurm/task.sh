#!/usr/bin/env bash
# One CPU process of `padnet-dist` on a Slurm allocation: the pipeline's data check and report jobs, and a detached
# coordinator or sweep driver (`padnet-dist pipeline|sweep ... --backend slurm --detach` submit themselves with it):
#   sbatch slurm/task.sh pipeline --config configs/cityscapes.yaml --backend slurm run.dir=s3://B/runs/city1
# No --time default: the partition's applies (a detached coordinator that reaches it is replaced by the next
# `padnet-dist pipeline` command, through the run's lease).
#SBATCH --job-name=padnet-task
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

venv="${PADNET_VENV:-.venv}"
if [ -f "$venv/bin/activate" ]; then
    # shellcheck disable=SC1091
    source "$venv/bin/activate"
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"

# A stop (`scancel --signal=TERM --full`) reaches padnet-dist too; the shell waits for it, then records its exit.
trap 'echo "padnet-dist: SIGTERM" >&2' TERM
padnet-dist "$@" && rc=0 || rc=$?
# The pipeline's Slurm backend reads this record once slurmctld has forgotten the job, where there is no sacct.
if [ -n "${PADNET_JOB_RECORD_DIR:-}" ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    record="$PADNET_JOB_RECORD_DIR/$SLURM_JOB_ID.exit.json"
    printf '{"exit_code": %d, "restarts": %d, "ended_at": %d, "token": "%s"}\n' "$rc" "${SLURM_RESTART_COUNT:-0}" \
        "$(date +%s)" "${PADNET_SUBMIT_TOKEN:-}" \
        >"$record.tmp" && mv "$record.tmp" "$record" || true
fi
exit "$rc"
