"""The launch layer: the only package that reads rank variables from the environment or imports Ray.

``env``: the ``World`` of this process from torchrun or Slurm variables, and rendezvous ports; ``local``:
``--nproc N`` local ranks (torch elastic) and ``rank``, their entry point; ``ray_train``: Ray Train workers;
``preflight``: cheap checks of a run's inputs before any of these starts.
"""

from padnet_dist.launch.env import current_world, free_port, world_from_env

__all__ = ["current_world", "free_port", "world_from_env"]
