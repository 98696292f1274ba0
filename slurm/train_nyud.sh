#!/usr/bin/env bash
# PAD-Net on NYUD-v2 (configs/nyud.yaml); submit from the repository root:
#   sbatch slurm/train_nyud.sh data.train_manifest=s3://B/nyud/train.manifest.json run.dir=s3://B/runs/n1
#   PHASE=2 sbatch --dependency=afterok:<phase-1 job> slurm/train_nyud.sh <the same overrides>
# Everything else as slurm/train.sh (which this runs): extra --config files and key=value overrides pass through.
#SBATCH --job-name=padnet-nyud
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
[ -f slurm/train.sh ] || { echo "submit from the padnet-dist repository root (no slurm/train.sh in $PWD)" >&2; exit 2; }
exec bash slurm/train.sh --config configs/nyud.yaml "$@"
