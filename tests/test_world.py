import pytest

from padnet_dist.world import World


def test_defaults_are_a_single_process():
    w = World()
    assert (w.rank, w.world_size, w.is_main, w.is_distributed) == (0, 1, True, False)


def test_rank_outside_world_is_refused():
    with pytest.raises(ValueError, match="outside world size"):
        World(rank=2, world_size=2)
    with pytest.raises(ValueError, match="outside"):
        World(node_rank=1, num_nodes=1)


def test_world_is_immutable():
    w = World(rank=1, world_size=2)
    with pytest.raises(AttributeError):
        w.rank = 0  # type: ignore[misc]
