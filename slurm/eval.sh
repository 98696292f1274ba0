#!/usr/bin/env bash
# Evaluate a checkpoint on a Slurm allocation (every task scores a share of the split; rank 0 writes metrics.json):
#   sbatch slurm/eval.sh --checkpoint s3://B/runs/c1/phase2 [--config FILE] [key=value ...]
#   sbatch --dependency=afterok:<phase-2 job> slurm/eval.sh --checkpoint s3://B/runs/c1/phase2
# The #SBATCH lines are GPU defaults; sbatch options on the command line win.
#SBATCH --job-name=padnet-eval
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=02:00:00
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

venv="${PADNET_VENV:-.venv}"
if [ -f "$venv/bin/activate" ]; then
    # shellcheck disable=SC1091
    source "$venv/bin/activate"
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"
if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then
    export SRUN_CPUS_PER_TASK="$SLURM_CPUS_PER_TASK"
fi

trap 'echo "padnet-dist: SIGTERM" >&2' TERM  # the shell outlives srun to record its exit
srun --kill-on-bad-exit=1 padnet-dist eval "$@" && rc=0 || rc=$?
# The pipeline's Slurm backend reads this record once slurmctld has forgotten the job, where there is no sacct.
if [ -n "${PADNET_JOB_RECORD_DIR:-}" ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    record="$PADNET_JOB_RECORD_DIR/$SLURM_JOB_ID.exit.json"
    printf '{"exit_code": %d, "restarts": %d, "ended_at": %d, "token": "%s"}\n' "$rc" "${SLURM_RESTART_COUNT:-0}" \
        "$(date +%s)" "${PADNET_SUBMIT_TOKEN:-}" \
        >"$record.tmp" && mv "$record.tmp" "$record" || true
fi
exit "$rc"
