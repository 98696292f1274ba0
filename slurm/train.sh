#!/usr/bin/env bash
# padnet-dist training on a Slurm allocation: one task per GPU; every task runs `padnet-dist train`, whose launch
# layer turns SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID/SLURM_NODEID and the node list into its rank geometry.
#
#   sbatch slurm/train.sh --config configs/nyud.yaml [--config more.yaml] [key=value ...]
#   PHASE=2 sbatch --dependency=afterok:<phase-1 job> slurm/train.sh --config configs/nyud.yaml ...
#
# The #SBATCH lines are GPU-cluster defaults; any sbatch option on the command line wins (CPU: --gpus-per-node=0
# --cpus-per-task=1). Arguments: --config files first, then key=value overrides. PHASE (env) appends phase=$PHASE.
# Time limit, preemption, scancel --signal=TERM: SIGTERM reaches every rank (120 s before the time limit); the ranks
# commit a checkpoint and exit 75; this script then requeues the job (same id, so afterok dependents keep waiting)
# at most PADNET_MAX_REQUEUES times (default 10) in all, and the requeued run resumes from that checkpoint.
#SBATCH --job-name=padnet-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

venv="${PADNET_VENV:-.venv}"  # relative to the submit directory (the repository root)
if [ -f "$venv/bin/activate" ]; then
    # shellcheck disable=SC1091
    source "$venv/bin/activate"
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"
# Slurm 22.05's srun no longer inherits the batch job's --cpus-per-task
if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then
    export SRUN_CPUS_PER_TASK="$SLURM_CPUS_PER_TASK"
fi

# Slurm signals the batch shell too on a preemption or `scancel --full`: the shell must outlive srun to requeue.
trap 'echo "padnet-dist: SIGTERM; waiting for the ranks to commit a checkpoint" >&2' TERM

# --kill-on-bad-exit: a rank that dies must not leave the others waiting in a collective. A rank exits only after
# the checkpoint is committed, and a signal then cannot change its exit code, so 75 from srun means "committed".
srun --kill-on-bad-exit=1 padnet-dist train "$@" ${PHASE:+"phase=$PHASE"} && rc=0 || rc=$?

max_requeues="${PADNET_MAX_REQUEUES:-10}"
if [ "$rc" -eq 75 ] && [ -n "${SLURM_JOB_ID:-}" ]; then  # 75: EXIT_INTERRUPTED, a checkpoint was committed
    restarts="${SLURM_RESTART_COUNT:-0}"
    if [ "$restarts" -lt "$max_requeues" ]; then
        echo "padnet-dist: interrupted after a committed checkpoint; requeueing job $SLURM_JOB_ID" \
            "(restart $((restarts + 1)) of at most $max_requeues, PADNET_MAX_REQUEUES)" >&2
        scontrol requeue "$SLURM_JOB_ID" || echo "padnet-dist: scontrol requeue failed: resubmit to resume" >&2
    else
        echo "padnet-dist: job $SLURM_JOB_ID was requeued $restarts times (PADNET_MAX_REQUEUES=$max_requeues):" \
            "not requeueing; resubmit the same command to resume" >&2
    fi
fi
# The pipeline's Slurm backend reads this record once slurmctld has forgotten the job, where there is no sacct.
if [ -n "${PADNET_JOB_RECORD_DIR:-}" ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    record="$PADNET_JOB_RECORD_DIR/$SLURM_JOB_ID.exit.json"
    printf '{"exit_code": %d, "restarts": %d, "ended_at": %d, "token": "%s"}\n' "$rc" "${SLURM_RESTART_COUNT:-0}" \
        "$(date +%s)" "${PADNET_SUBMIT_TOKEN:-}" \
        >"$record.tmp" && mv "$record.tmp" "$record" || true
fi
exit "$rc"
