#!/usr/bin/env bash
# padnet-dist training on a Slurm allocation: one task per GPU; every task runs `padnet-dist train`, whose launch
# layer turns SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID/SLURM_NODEID and the node list into its rank geometry.
#
#   sbatch slurm/train.sh --config configs/nyud.yaml [--config more.yaml] [key=value ...]
#   PHASE=2 sbatch --dependency=afterok:<phase-1 job> slurm/train.sh --config configs/nyud.yaml ...
#
# The #SBATCH lines are GPU-cluster defaults; any sbatch option on the command line wins (CPU: --gpus-per-node=0
# --cpus-per-task=1). Arguments: --config files first, then key=value overrides. PHASE (env) appends phase=$PHASE.
# Preemption: SIGTERM reaches every rank 120 s before the time limit (or at preemption); the ranks commit a
# checkpoint and exit; a requeued or resubmitted job resumes from it (run.resume=auto).
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

# --kill-on-bad-exit: a rank that dies must not leave the others waiting in a collective
exec srun --kill-on-bad-exit=1 padnet-dist train "$@" ${PHASE:+"phase=$PHASE"}
