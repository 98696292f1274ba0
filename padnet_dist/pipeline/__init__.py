"""The coordinator: a run's phases and evaluations as jobs on a backend (local processes, Slurm, Ray)."""
