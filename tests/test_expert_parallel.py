"""labkit.moe.expert_parallel: the two-process torchrun self-check, and the check's own failure path."""
import pytest
import torch
import torch.distributed as dist

from labkit.moe import MoEFeedForward
from labkit.moe import expert_parallel as ep


def test_two_rank_torchrun_self_check_passes():
    proc = ep.run_demo(nproc=2, timeout=180)
    assert proc.stdout.strip().endswith("PASS"), proc.stdout
    assert "2 ranks (gloo)" in proc.stdout
    assert proc.stdout.count("matches the single-process layer: True") == 6


@pytest.fixture
def one_rank_group(tmp_path):
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_single_rank_matches_and_a_wrong_layer_is_caught(one_rank_group, monkeypatch, capsys):
    assert ep.self_check()
    assert capsys.readouterr().out.strip().endswith("PASS")
    original = ep.ExpertParallelMoE.forward
    monkeypatch.setattr(ep.ExpertParallelMoE, "forward", lambda self, x: original(self, x) * 1.001)
    assert not ep.self_check()
    assert "FAIL" in capsys.readouterr().out


def test_bad_construction(one_rank_group):
    with pytest.raises(ValueError, match="dropless"):
        ep.ExpertParallelMoE(MoEFeedForward(8, 16, 4, capacity_factor=1.0))
    with pytest.raises(TypeError, match="MoEFeedForward"):
        ep.ExpertParallelMoE(torch.nn.Linear(8, 8))
    layer = ep.ExpertParallelMoE(MoEFeedForward(8, 16, 4))
    with pytest.raises(ValueError, match="d_model=8"):
        layer(torch.randn(3, 5))


def test_needs_an_initialised_process_group():
    with pytest.raises(RuntimeError, match="init_process_group"):
        ep.ExpertParallelMoE(MoEFeedForward(8, 16, 4))
    with pytest.raises(ValueError, match="nproc"):
        ep.run_demo(nproc=0)
