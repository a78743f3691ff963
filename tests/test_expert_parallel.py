"""labkit.moe.expert_parallel: the two-process self-check, its failure path, and that it listens on loopback only."""
import socket
import subprocess

import psutil
import pytest
import torch
import torch.distributed as dist

from labkit.moe import MoEFeedForward
from labkit.moe import expert_parallel as ep


def test_two_rank_self_check_passes():
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


def _listening(processes: list) -> list:
    """Listening TCP sockets and bound UDP sockets of ``processes``, as (pid, local address)."""
    found = []
    for p in processes:
        try:
            conns = p.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found += [(p.pid, c.laddr) for c in conns
                  if c.status == psutil.CONN_LISTEN or (c.type == socket.SOCK_DGRAM and not c.raddr)]
    return found


def test_demo_listens_on_loopback_only():
    """While the ranks are alive, every socket they listen on is bound to 127.0.0.1 (never all interfaces)."""
    proc = subprocess.Popen(ep.demo_command(2, hold_s=10), env=ep.demo_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    tree = [psutil.Process(proc.pid)]
    try:
        lines: list[str] = []
        while not lines or lines[-1].strip() not in ("PASS", ""):  # the check prints PASS, then the ranks hold
            lines.append(proc.stdout.readline())
            if lines[-1].startswith("FAIL"):
                break
        assert lines[-1].strip() == "PASS", "".join(lines)
        tree += tree[0].children(recursive=True)
        assert len(tree) >= 3, tree  # the launcher and its two ranks are alive
        sockets = _listening(tree)
        assert sockets, "the ranks listen on nothing: the test would prove nothing"
        assert all(addr.ip == "127.0.0.1" for _, addr in sockets), sockets
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    finally:
        for p in reversed(tree):  # only the processes this test started
            if p.is_running():
                p.kill()
