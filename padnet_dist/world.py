"""The geometry of a distributed job, built once by the launch layer and passed down."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class World:
    """Where this process stands in the job.

    Built once by a launcher (``padnet_dist.launch``) from torchrun, Slurm or Ray; everything
    else takes it as an argument instead of reading ``RANK`` and friends from the environment.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    node_rank: int = 0
    num_nodes: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside world size {self.world_size}")
        if not 0 <= self.node_rank < self.num_nodes:
            raise ValueError(f"node rank {self.node_rank} is outside {self.num_nodes} nodes")

    @property
    def is_main(self) -> bool:
        """True on the one process that writes shared files, logs summaries and shows progress."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1
