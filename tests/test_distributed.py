"""Which GPU a rank uses, over the visible-device layouts launchers produce (a pure function; no GPU needed)."""

from __future__ import annotations

import pytest

from padnet_dist.distributed import cuda_device_index
from padnet_dist.errors import UserError


@pytest.mark.parametrize("num_local_ranks", [1, 4, 8])
def test_ranks_sharing_all_of_a_nodes_gpus_use_their_local_rank(num_local_ranks):
    # torchrun, --nproc, srun without GPU binding: CUDA_VISIBLE_DEVICES=0,...,7 for every rank
    assert [cuda_device_index(r, num_local_ranks, 8) for r in range(num_local_ranks)] == list(range(num_local_ranks))


def test_a_task_bound_to_one_gpu_uses_device_0():
    # srun --gpus-per-task=1 / --gpu-bind=single:1 / Ray: CUDA_VISIBLE_DEVICES=<its one GPU>, any local rank
    assert [cuda_device_index(r, 8, 1) for r in range(8)] == [0] * 8


def test_a_task_bound_to_several_gpus_uses_its_first():
    # srun --ntasks-per-node=4 --gpus-per-task=2: each task sees its own two devices
    assert [cuda_device_index(r, 4, 2) for r in range(4)] == [0, 0, 0, 0]


def test_no_visible_gpu_or_too_many_ranks_are_named():
    with pytest.raises(UserError, match="no GPU is visible"):
        cuda_device_index(0, 1, 0)
    with pytest.raises(UserError, match="local rank 3 has no GPU"):
        cuda_device_index(3, 2, 2)
