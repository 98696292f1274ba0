#!/usr/bin/env bash
# Installs what the local two-node Slurm test cluster needs (Debian: slurmctld slurmd slurm-client munge)
# when it is missing and we are root. Idempotent; never fails the caller: without the packages the Slurm
# tests skip with the reason (or fail under CI=true).
set -u
packages=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "slurm_local: packages present: ${packages[*]}"
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "slurm_local: missing ${missing[*]} and not root with apt-get: the Slurm tests will skip" \
        "(install them: sudo apt-get install -y ${missing[*]})"
    exit 0
fi
echo "slurm_local: apt-get install -y ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# the package lists may be absent in a fresh container; update only then
if ! apt-get install -y -q "${missing[@]}"; then
    apt-get update -q && apt-get install -y -q "${missing[@]}" ||
        echo "slurm_local: installing ${missing[*]} failed: the Slurm tests will skip"
fi
exit 0
