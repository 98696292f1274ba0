"""The coordinator's section of the config: job sizes per backend, evaluation cadence, retries, the lease."""

from __future__ import annotations

from dataclasses import dataclass, field

PIPELINE_BACKENDS = ("local", "slurm", "ray")
PHASE2_INIT = ("final", "best")


@dataclass(kw_only=True)
class PipelineConfig:
    """How ``padnet-dist pipeline`` runs a config's phases and evaluations as jobs (``--backend`` wins over backend)."""

    backend: str = "local"
    nodes: int = 1  # per training job (slurm: --nodes; ray: workers = nodes * ranks_per_node)
    ranks_per_node: int = 2  # local: the number of processes (--nproc)
    gpus_per_rank: int = 0
    cpus_per_rank: int = 1  # also each rank's OMP_NUM_THREADS (local backend; slurm: --cpus-per-task)
    eval_ranks: int = 1  # ranks of an evaluation job
    eval_every: int = 0  # also evaluate every N-th committed checkpoint while training (0: the phase's final only)
    best_metric: str = "semantic.miou"  # section.key of the eval metrics; higher is better unless in lower_is_better
    phase2_init: str = "final"  # phase 2 starts from phase 1's final committed checkpoint, or its best evaluated one
    baseline: bool = False  # also train and evaluate the front-end baseline (model.variant=frontend), same schedule
    # run dir of another pipeline run whose phase 1 this run's phase 2 starts from (a sweep's shared phase 1): no
    # phase-1 job of its own; phase 2 waits for that run's phase 1 and its evaluations (docs/reproducing.md)
    phase1_from: str = ""
    max_retries: int = 2  # a failed job is resubmitted this many times, then the pipeline stops
    poll_every_s: float = 5.0
    lease_ttl_s: float = 120.0  # a coordinator that stops heartbeating loses the run after this long
    slurm_args: list[str] = field(default_factory=list)  # extra sbatch options, e.g. ["--partition=gpu", "--account=a"]
    ray_address: str = ""  # "": the RAY_ADDRESS environment variable

    def __post_init__(self) -> None:
        if self.backend not in PIPELINE_BACKENDS:
            raise ValueError(f"pipeline.backend='{self.backend}' is not one of {', '.join(PIPELINE_BACKENDS)}")
        if self.phase2_init not in PHASE2_INIT:
            raise ValueError(f"pipeline.phase2_init='{self.phase2_init}' is not one of {', '.join(PHASE2_INIT)}")
        if min(self.nodes, self.ranks_per_node, self.cpus_per_rank, self.eval_ranks) < 1:
            raise ValueError("pipeline.nodes, ranks_per_node, cpus_per_rank and eval_ranks must be >= 1")
        if self.gpus_per_rank < 0 or self.eval_every < 0 or self.max_retries < 0:
            raise ValueError("pipeline.gpus_per_rank, eval_every and max_retries must be >= 0")
        if self.poll_every_s <= 0 or self.lease_ttl_s <= 0:
            raise ValueError("pipeline.poll_every_s and pipeline.lease_ttl_s must be > 0")
        if "." not in self.best_metric:
            raise ValueError(f"pipeline.best_metric='{self.best_metric}': use section.key, e.g. semantic.miou")
