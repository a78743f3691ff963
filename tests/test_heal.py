"""Healing a pruned language model (issue 19, section 1): masks held exactly through training, distillation that
lowers the KL to the dense model, the dense control, the curve, bad input, the training text disjoint from the
evaluation and calibration text, and the sweep script (benchmarks/llm_heal_sweep.py) on a tiny model."""
import copy
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from labkit import data as labdata
from labkit import llm, results
from labkit.llm import heal, text

ROOT = Path(__file__).resolve().parent.parent


def _train_tokens(rows: int = 32, length: int = 24, seed: int = 2) -> torch.Tensor:
    return torch.randint(0, 96, (rows, length), generator=torch.Generator().manual_seed(seed))


def _pruned(teacher, method: str = "magnitude", pattern: str = "unstructured"):
    student = copy.deepcopy(teacher)
    llm.prune(student, method, pattern, 0.5 if pattern == "unstructured" else None)
    return student


# --- masks ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("objective, pattern", [("distill", "unstructured"), ("next_token", "2:4")])
def test_masks_hold_exactly_after_every_optimizer_step(tiny, objective, pattern):
    student = _pruned(tiny, pattern=pattern)
    masks = llm.keep_masks(student)
    layers = llm.prunable_layers(student)
    assert sum(int((~m).sum()) for m in masks.values()) > 0
    before = {name: layer.weight.detach().clone() for name, layer in layers.items()}
    frozen = {name: p.detach().clone() for name, p in student.named_parameters()
              if not any(name == f"{layer}.weight" for layer in layers)}
    checked = []

    def check(step: int, loss: float) -> None:
        for name, layer in layers.items():
            assert torch.all(layer.weight[~masks[name]] == 0), f"step {step}: {name} has a pruned weight off zero"
        checked.append(step)

    teacher_state = copy.deepcopy(tiny.state_dict())
    result = llm.heal_pruned(student, _train_tokens(), objective=objective,
                             teacher=tiny if objective == "distill" else None, steps=6, batch_size=4, lr=1e-2,
                             on_step=check, progress=False)
    assert checked == list(range(1, 7))
    assert result["masked_weights"] == sum(int((~m).sum()) for m in masks.values())
    assert result["block_sparsity"] == pytest.approx(0.5)
    # training happened: the kept weights moved; nothing outside the block matrices did
    assert any(not torch.equal(layers[n].weight[masks[n]], before[n][masks[n]]) for n in layers)
    for name, p in student.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), f"{name} is not a block matrix, yet it changed"
    assert all(torch.equal(v, teacher_state[k]) for k, v in tiny.state_dict().items())  # the teacher never trains
    assert not student.training and all(p.requires_grad for p in student.parameters())  # handed back as it came


def test_without_masks_one_adamw_step_fills_the_zeros(tiny):
    """Why the masks are re-applied: fine-tuning a pruned model *without* them (the dense control's rule)
    moves every pruned weight, however small its gradient."""
    student = _pruned(tiny)
    zeros = {n: (layer.weight == 0).clone() for n, layer in llm.prunable_layers(student).items()}
    llm.finetune_dense(student, _train_tokens(), steps=1, lr=1e-3, progress=False)
    moved = sum(int((layer.weight[zeros[n]] != 0).sum()) for n, layer in llm.prunable_layers(student).items())
    assert moved > 0.9 * sum(int(z.sum()) for z in zeros.values())


# --- the objectives -------------------------------------------------------------------------------------------

def test_distillation_lowers_the_kl_to_the_teacher(tiny):
    student = _pruned(tiny)
    held_out = _train_tokens(8, 24, seed=5)  # never trained on
    before = llm.kl_to_teacher(student, tiny, held_out)
    result = llm.heal_pruned(student, _train_tokens(), teacher=tiny, steps=30, lr=1e-3, progress=False)
    after = llm.kl_to_teacher(student, tiny, held_out)
    assert before > 0.05 and after < 0.8 * before
    losses = result["train_losses"]
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    # the same seed gives the same run
    again = llm.heal_pruned(_pruned(tiny), _train_tokens(), teacher=tiny, steps=30, lr=1e-3, progress=False)
    assert again["train_losses"] == losses


def test_an_unpruned_student_equal_to_its_teacher_starts_at_zero_kl(tiny, tokens):
    student = copy.deepcopy(tiny)
    assert llm.kl_to_teacher(student, tiny, tokens) == pytest.approx(0.0, abs=1e-6)
    result = llm.heal_pruned(student, _train_tokens(), teacher=tiny, steps=2, lr=1e-3, progress=False)
    assert result["train_losses"][0] == pytest.approx(0.0, abs=1e-6)  # nothing to learn: the KL is zero
    assert result["masked_weights"] == 0


def test_distillation_loss_is_the_kl_of_the_next_token_distributions():
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 7, generator=gen), torch.randn(2, 5, 7, generator=gen)
    p, q = torch.softmax(teacher[:, :-1], -1), torch.softmax(student[:, :-1], -1)
    expected = (p * (p.log() - q.log())).sum(-1).mean()
    assert float(heal.distillation_loss(student, teacher)) == pytest.approx(float(expected), rel=1e-5)
    assert float(heal.distillation_loss(teacher, teacher)) == pytest.approx(0.0, abs=1e-7)


def test_the_dense_control_trains_and_draws_its_curve(tiny):
    model = copy.deepcopy(tiny)
    pattern = torch.arange(24).repeat(16, 1) % 12  # a text the model can learn: the same 12 tokens again and again
    evaluation = pattern[:8]
    baseline = llm.window_losses(tiny, evaluation, progress=False)
    result = llm.finetune_dense(model, pattern, steps=12, lr=3e-3, evaluation=evaluation, eval_at=[0, 4, 12],
                                eval_windows=4, baseline_losses=baseline, progress=False)
    assert result["objective"] == "next_token" and result["masked_weights"] == 0
    first, middle, last = result["points"]
    assert [p["step"] for p in result["points"]] == [0, 4, 12]
    assert first["windows"] is None and last["windows"] is None and middle["windows"] == [0, 2, 4, 6]
    assert len(first["window_losses"]) == 8 and len(middle["window_losses"]) == 4
    assert first["ratio"] == pytest.approx(1.0) and first["tokens_seen"] == 0 and first["cpu_seconds"] == 0
    assert last["tokens_seen"] == 12 * 4 * 24 and last["cpu_seconds"] >= middle["cpu_seconds"] > 0
    assert last["perplexity"] < 0.5 * first["perplexity"] and last["ratio_ci"][1] < 1
    assert last["perplexity_ci"][0] <= last["perplexity"] <= last["perplexity_ci"][1]


# --- bad input --------------------------------------------------------------------------------------------------

def test_bad_input_names_the_argument_and_the_fix(tiny, tokens):
    student, train = _pruned(tiny), _train_tokens()
    with pytest.raises(ValueError, match="objective must be one of"):
        llm.heal_pruned(student, train, objective="kl", teacher=tiny)
    with pytest.raises(ValueError, match="needs teacher=the dense model"):
        llm.heal_pruned(student, train)
    with pytest.raises(ValueError, match="teacher is used only by objective='distill'"):
        llm.heal_pruned(student, train, objective="next_token", teacher=tiny)
    with pytest.raises(ValueError, match="teacher is the student itself"):
        llm.heal_pruned(student, train, teacher=student)
    with pytest.raises(TypeError, match="teacher must be the dense model"):
        llm.heal_pruned(student, train, teacher="dense")
    with pytest.raises(ValueError, match="same tokenizer"):
        llm.heal_pruned(student, train, teacher=llm.tiny_llama(vocab_size=64))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        llm.finetune_dense("model", train)
    with pytest.raises(TypeError, match="train_tokens must have dtype"):
        llm.heal_pruned(student, train.float(), teacher=tiny)
    with pytest.raises(ValueError, match="outside"):
        llm.heal_pruned(student, train + 1000, teacher=tiny)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        llm.heal_pruned(student, train, teacher=tiny, steps=0)
    with pytest.raises(ValueError, match="lr must be a positive learning rate"):
        llm.heal_pruned(student, train, teacher=tiny, lr=0)
    with pytest.raises(TypeError, match="lr must be a real number"):
        llm.heal_pruned(student, train, teacher=tiny, lr="2e-5")
    with pytest.raises(ValueError, match="batch_size .* is more than the 32 training sequences"):
        llm.heal_pruned(student, train, teacher=tiny, batch_size=33)
    with pytest.raises(ValueError, match="eval_at needs evaluation tokens"):
        llm.heal_pruned(student, train, teacher=tiny, eval_at=[0, 1])
    with pytest.raises(ValueError, match="eval_at must be increasing steps in 0..5"):
        llm.heal_pruned(student, train, teacher=tiny, steps=5, evaluation=tokens, eval_at=[0, 6])
    with pytest.raises(ValueError, match="eval_at must be increasing"):
        llm.heal_pruned(student, train, teacher=tiny, steps=5, evaluation=tokens, eval_at=[3, 1])
    with pytest.raises(ValueError, match="eval_windows must be at least 2"):
        llm.heal_pruned(student, train, teacher=tiny, evaluation=tokens, eval_windows=1)
    with pytest.raises(ValueError, match="baseline_losses holds 3 losses, evaluation 6 windows"):
        llm.heal_pruned(student, train, teacher=tiny, evaluation=tokens, baseline_losses=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="baseline_losses needs evaluation tokens"):
        llm.heal_pruned(student, train, teacher=tiny, baseline_losses=[1.0, 2.0])
    with pytest.raises(TypeError, match="on_step must be a function"):
        llm.heal_pruned(student, train, teacher=tiny, on_step=3)
    with pytest.raises(ValueError, match="batch_size"):
        llm.kl_to_teacher(student, tiny, tokens, batch_size=0)
    # nothing above trained the student: every check ran before the first step
    assert llm.measure_sparsity(student)["block_sparsity"] == pytest.approx(0.5)


# --- training batches and the training text -------------------------------------------------------------------

def test_training_batches_are_seeded_and_never_repeat_a_row_within_an_epoch():
    rows = torch.arange(10).repeat_interleave(3).reshape(10, 3)  # row i holds i, i, i
    batches = llm.training_batches(rows, 3, seed=0)
    epoch = [next(batches) for _ in range(3)]  # 3 batches of 3 of the 10 rows; the 10th waits
    seen = [int(b[0]) for batch in epoch for b in batch]
    assert len(set(seen)) == 9 and all(b.shape == (3, 3) for b in epoch)
    again = llm.training_batches(rows, 3, seed=0)
    assert all(torch.equal(next(again), b) for b in epoch)
    other = llm.training_batches(rows, 3, seed=1)
    assert not all(torch.equal(next(other), b) for b in epoch)
    with pytest.raises(ValueError, match="batch_size .* is more than the 10 training sequences"):
        next(llm.training_batches(rows, 11))
    with pytest.raises(TypeError, match="tokens must be a torch.Tensor"):
        next(llm.training_batches([[1, 2]], 1))


def test_stdlib_docstrings_are_pinned_and_checked(tmp_path, monkeypatch):
    docs = labdata.stdlib_docstrings()
    assert list(docs) == sorted(labdata.STDLIB_MODULES) and "json.dumps" in docs["json"]
    if sys.version_info[:3] == (3, 11, 7):  # the pinned copy is what this Python reads
        assert labdata.read_stdlib_docstrings() == docs
    import gzip
    bad = tmp_path / "stdlib_docstrings.json.gz"
    bad.write_bytes(gzip.compress(json.dumps({"json": "edited"}).encode()))
    monkeypatch.setattr(labdata, "STDLIB_DOCSTRINGS_PATH", bad)
    labdata.stdlib_docstrings.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="SHA-256.*git checkout"):
            labdata.stdlib_docstrings()
    finally:
        labdata.stdlib_docstrings.cache_clear()
    with pytest.raises(TypeError, match="modules must be a tuple"):
        labdata.read_stdlib_docstrings("json")


@pytest.fixture(scope="module")
def tokenizer():
    return llm.load()[1]


def _runs(rows: torch.Tensor, n: int) -> set:
    return set().union(*(text._grams(row, n) for row in rows))


@pytest.mark.slow
def test_training_text_is_disjoint_from_evaluation_and_calibration(tokenizer):
    split = llm.training_split(tokenizer)
    splits = llm.text_splits(tokenizer)
    train = split["tokens"]
    assert train.shape[1] == 128 and train.numel() >= 150_000 and 0 < split["help_windows"] < train.shape[0]
    # topics: none of the evaluation topics; the help topics that repeat evaluation text are left out too
    assert not set(split["help_topics"]) & set(splits["evaluation_topics"])
    assert {"specialnames", "try", "while", "with"} <= set(split["left_out_topics"])
    assert set(split["help_topics"]) | set(split["left_out_topics"]) == set(splits["calibration_topics"])
    # tokens: no evaluation window, and not even 32 tokens in a row of one, appears in the training text
    rows = {tuple(r) for r in train.tolist()}
    assert not rows & {tuple(r) for r in splits["evaluation"].tolist()}
    assert not _runs(train, text.REPEAT_RUN) & _runs(splits["evaluation"], text.REPEAT_RUN)
    # nor any calibration window the lab uses (the largest set, 128 x 128; smaller sets are its start)
    calibration = llm.calibration_tokens(tokenizer, "help", text.RESERVED_CALIBRATION, text.CALIBRATION_LENGTH)
    assert torch.equal(calibration[:32], splits["calibration"])
    assert not _runs(train, text.REPEAT_RUN) & _runs(calibration, text.REPEAT_RUN)
    # the split is the same every time
    assert torch.equal(llm.training_split(tokenizer)["tokens"], train)
    with pytest.raises(ValueError, match="reserved_calibration must be below"):
        llm.training_split(tokenizer, reserved_calibration=10_000)


# --- the sweep script on a tiny model ---------------------------------------------------------------------------

def _sweep():
    spec = importlib.util.spec_from_file_location("llm_heal_sweep", ROOT / "benchmarks" / "llm_heal_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_writes_resumable_rows_with_curves(tmp_path, monkeypatch):
    sweep = _sweep()
    tiny = llm.tiny_llama(seed=0)
    gen = torch.Generator().manual_seed(0)
    inputs = {"evaluation": torch.randint(0, 96, (8, 24), generator=gen),
              "calibration": torch.randint(0, 96, (4, 24), generator=gen),
              "train": torch.randint(0, 96, (16, 24), generator=gen), "train_text": "16 random windows"}
    calls = []
    monkeypatch.setattr(sweep, "load_inputs", lambda quick: (calls.append(quick), tiny, None, inputs)[1:])
    out = tmp_path / "heal.json"
    assert sweep.main(["--quick", "--out", str(out), "--only", "dense_next_token"]) == 0
    data = results.read(out, "llm_heal")
    assert not data["complete"] and [r["method"] for r in data["rows"]] == ["dense"]
    control = data["rows"][0]
    # the control's first point is the dense model itself
    assert control["curve"][0]["window_losses"] == data["dense"]["window_losses"]
    assert control["curve"][0]["ratio"] == pytest.approx(1.0)
    assert sweep.main(["--quick", "--out", str(out), "--resume"]) == 0
    data = results.read(out, "llm_heal")
    assert data["complete"] and [r["method"] for r in data["rows"]] == ["dense", "wanda"]
    assert data["rows"][0] == control  # resumed: the finished case was kept, not run again
    healed = data["rows"][1]
    assert healed["masks_held"] and healed["objective"] == "distill"
    assert healed["block_sparsity"] == pytest.approx(0.5)
    assert [p["step"] for p in healed["curve"]] == list(sweep.QUICK_PLAN.eval_at)
    assert healed["curve"][1]["windows"] == [0, 2, 4, 6]  # the subset in the middle, all windows at the ends
    assert healed["perplexity"] == healed["curve"][-1]["perplexity"] and len(healed["train_losses"]) == 2
    assert calls == [True, True]
    with pytest.raises(SystemExit):  # --only takes the case names
        sweep.main(["--quick", "--out", str(out), "--only", "wanda"])


def test_sweep_plan_fits_its_budget():
    """The committed plan: every case once, 80 steps of 4 x 128 tokens, a curve of 4 points, the training text
    never seen twice by one run (173,824 tokens), and the estimate of the docstring under 60 minutes."""
    sweep = _sweep()
    names = [c.name for c in sweep.CASES]
    assert names == ["wanda_50_distill", "sparsegpt_50_distill", "wanda_2:4_distill", "sparsegpt_2:4_distill",
                     "sparsegpt_70_distill", "magnitude_50_distill", "wanda_50_next_token", "dense_next_token"]
    assert sweep.PLAN.eval_at[0] == 0 and sweep.PLAN.eval_at[-1] == sweep.PLAN.steps == sweep.STEPS
    assert sweep.STEPS * sweep.BATCH_SIZE * sweep.LENGTH <= 173_824
    distill = sum(c.objective == "distill" for c in sweep.CASES)
    train_minutes = (distill * 4.2 + (len(names) - distill) * 2.0) * sweep.STEPS / 60
    score_minutes = (len(names) * (2 * 23 + (len(sweep.EVAL_AT) - 2) * 6) + 23) / 60
    assert train_minutes + score_minutes + 3 <= 60
