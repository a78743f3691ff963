"""The arithmetic behind "sparsity scales to trillions of parameters": what activating a subset saves, and what not.

An MoE model keeps many experts and sends each token to ``top_k`` of them. Two counts follow:

* **total** parameters: every expert, all of which must sit in memory (2 bytes each in bf16);
* **active** parameters: what one token touches, which sets the FLOPs per token,
  about ``2 x active`` for a forward pass (one multiply and one add per weight; the usual
  approximation, which ignores attention over the context and counts the embedding lookup as work).

So sparsity cuts FLOPs (and, on the right hardware, energy) per token by about total/active,
while the memory to hold the weights stays that of the *total*, and, once experts are spread over
devices, every token's activations travel to its experts and back (:func:`expert_traffic_bytes`).

The models are in ``labkit/tables/moe_models.csv``, each with its published configuration and
source. Where the configuration is fully published, total and active parameters are computed from
it (:func:`parameter_counts`) and checked against the published totals in the tests; otherwise the
published counts are used and the row says so (``params_from``). :func:`tiny_table` puts notebook
04's measured tiny MoE into the same form, and :func:`measured_energy` sets the FLOP savings beside a
measured energy-per-token ratio from ``labkit/tables/published_energy.csv``.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from labkit import checks, results

#: Bytes per parameter in bf16, the usual format for serving these models.
BF16_BYTES = 2

#: Default comparisons: each MoE model beside a dense one of similar active size (Mixtral 12.9B vs
#: LLaMA-2 13B, Qwen3-30B-A3B 3.3B vs Qwen3-8B), of similar total size (Qwen3-30B-A3B vs Qwen3-32B,
#: the pair with measured energy), or the dense model its own paper compares with (GLaM vs GPT-3,
#: DeepSeek-V3 vs Llama 3.1 405B), and DeepSeek-V3 vs the dense LLaMA-2 70B.
PAIRS = (("mixtral-8x7b", "llama-2-13b"), ("qwen3-30b-a3b", "qwen3-8b"), ("qwen3-30b-a3b", "qwen3-32b"),
         ("glam", "gpt-3"), ("deepseek-v3", "llama-2-70b"), ("deepseek-v3", "llama-3.1-405b"))

_INT_FIELDS = ("year", "layers", "d_model", "n_heads", "n_kv_heads", "head_dim", "ffn_mats", "d_ff", "vocab",
               "tied_embeddings", "pos_embeddings", "experts", "top_k", "shared_experts", "expert_d_ff",
               "dense_layers", "q_lora_rank", "kv_lora_rank", "rope_head_dim")


@dataclass(frozen=True)
class ModelConfig:
    """One published model: its shape (None where not taken) and published parameter counts in billions."""

    key: str
    name: str
    kind: str
    year: int
    layers: int | None
    d_model: int | None
    n_heads: int | None
    n_kv_heads: int | None
    head_dim: int | None
    ffn_mats: int | None  # weight matrices per feed-forward block: 3 for SwiGLU (gate, up, down), 2 for GELU
    d_ff: int | None  # dense feed-forward width (the dense layers of an MoE model, or every layer of a dense one)
    vocab: int | None
    tied_embeddings: int | None
    pos_embeddings: int | None  # learned position table rows (GPT-3), 0 for rotary positions
    experts: int | None
    top_k: int | None
    shared_experts: int | None
    expert_d_ff: int | None
    dense_layers: int | None  # leading layers with a dense feed-forward block instead of experts
    q_lora_rank: int | None  # multi-head latent attention (DeepSeek): low-rank query and key-value projections
    kv_lora_rank: int | None
    rope_head_dim: int | None
    published_total_b: float
    published_active_b: float
    config_source: str
    published_source: str

    @property
    def computable(self) -> bool:
        """Whether the table has the full shape, so parameters can be counted from it."""
        return self.layers is not None

    @property
    def moe_layers(self) -> int:
        """Layers whose feed-forward block is a set of experts."""
        if self.kind != "moe" or self.layers is None:
            return 0
        return self.layers - (self.dense_layers or 0)


def models() -> dict[str, ModelConfig]:
    """Every model in ``labkit/tables/moe_models.csv``, keyed by its short name."""
    text = resources.files("labkit").joinpath("tables/moe_models.csv").read_text()
    out = {}
    for row in csv.DictReader(text.splitlines()):
        ints = {f: int(row[f]) if row[f].strip() else None for f in _INT_FIELDS}
        out[row["key"]] = ModelConfig(row["key"], row["name"], row["kind"], **ints,  # type: ignore[arg-type]
                                      published_total_b=float(row["published_total_b"]),
                                      published_active_b=float(row["published_active_b"]),
                                      config_source=row["config_source"], published_source=row["published_source"])
    return out


def model(key: str) -> ModelConfig:
    """The model called ``key`` (see :func:`models` for the names)."""
    if not isinstance(key, str):
        raise TypeError(f"key must be a model name such as 'mixtral-8x7b', got {type(key).__name__}")
    table = models()
    if key not in table:
        raise ValueError(f"unknown model {key!r}. Valid models: {', '.join(table)}")
    return table[key]


def _attention_params(c: ModelConfig) -> int:
    """Weights of one attention block (norms and biases left out: well under 1% of these models)."""
    assert c.d_model is not None and c.n_heads is not None and c.head_dim is not None and c.n_kv_heads is not None
    d, h, hd = c.d_model, c.n_heads, c.head_dim
    if c.kv_lora_rank:  # multi-head latent attention: queries and keys/values pass through small latents
        rope = c.rope_head_dim or 0
        q = d * c.q_lora_rank + c.q_lora_rank * h * (hd + rope) if c.q_lora_rank else d * h * (hd + rope)
        kv = d * (c.kv_lora_rank + rope) + c.kv_lora_rank * h * (hd + hd)  # keys (no-RoPE part) and values
        return q + kv + h * hd * d
    return d * h * hd + 2 * d * c.n_kv_heads * hd + h * hd * d  # q, k and v, output


def parameter_counts(c: ModelConfig) -> tuple[int, int]:
    """(total, active) parameters counted from the configuration: every expert vs what one token uses.

    Active counts the attention of every layer, the dense feed-forward layers, the router, the
    shared experts and ``top_k`` routed experts per MoE layer, and the input and output embeddings.
    """
    if not c.computable:
        raise ValueError(f"{c.key} has no full configuration in the table ({c.config_source}); "
                         f"use its published counts (scale_row does)")
    assert c.layers is not None and c.d_model is not None and c.vocab is not None and c.ffn_mats is not None
    d = c.d_model
    embed = c.vocab * d * (1 if c.tied_embeddings else 2) + (c.pos_embeddings or 0) * d
    attention = c.layers * _attention_params(c)
    dense_layers = c.layers - c.moe_layers
    dense_ffn = dense_layers * c.ffn_mats * d * (c.d_ff or 0)
    total = active = embed + attention + dense_ffn
    if c.moe_layers:
        assert c.experts is not None and c.top_k is not None and c.expert_d_ff is not None
        expert = c.ffn_mats * d * c.expert_d_ff
        router = d * c.experts
        shared = c.shared_experts or 0
        total += c.moe_layers * ((c.experts + shared) * expert + router)
        active += c.moe_layers * ((c.top_k + shared) * expert + router)
    return total, active


def expert_traffic_bytes(c: ModelConfig, bytes_per_value: int = BF16_BYTES) -> float | None:
    """Bytes one token's activations travel between devices per forward pass, with experts spread over devices.

    Each MoE layer sends the token's ``d_model`` vector to each of its ``top_k`` experts and gets
    the results back (dispatch + combine), so ``2 x top_k x d_model x bytes`` per MoE layer: an upper
    bound that assumes no chosen expert lives on the token's own device. Shared experts stay local.
    None where the shape is not in the table. (A dense model split by tensor parallelism also
    communicates; this counts only the traffic that routing adds.)
    """
    b = checks.positive_int("bytes_per_value", bytes_per_value)
    if not c.computable or c.kind != "moe":
        return None if not c.computable else 0.0
    assert c.top_k is not None and c.d_model is not None
    return float(2 * c.top_k * c.d_model * b * c.moe_layers)


@dataclass(frozen=True)
class ScaleRow:
    """One model in the table's form: parameters, FLOPs per token and memory for its weights."""

    key: str
    name: str
    kind: str
    total_params: float
    active_params: float
    params_from: str
    flops_per_token: float
    flops_from: str
    weight_bytes: float
    traffic_bytes_per_token: float | None
    source: str

    @property
    def active_share(self) -> float:
        """Active / total: the part of the model one token uses."""
        return self.active_params / self.total_params


def scale_row(key: str, bytes_per_param: int = BF16_BYTES) -> ScaleRow:
    """The table row of model ``key``: counts from its configuration where complete, else the published ones."""
    c = model(key)
    b = checks.positive_int("bytes_per_param", bytes_per_param)
    if c.computable:
        total, active = (float(n) for n in parameter_counts(c))
        params_from, source = "config", c.config_source
    else:
        total, active = c.published_total_b * 1e9, c.published_active_b * 1e9
        params_from, source = "published", c.published_source
    return ScaleRow(c.key, c.name, c.kind, total, active, params_from, 2.0 * active, "2 x active", total * b,
                    expert_traffic_bytes(c, b), source)


def scale_table(bytes_per_param: int = BF16_BYTES) -> list[ScaleRow]:
    """Every model of the table, MoE and dense, in table order."""
    return [scale_row(key, bytes_per_param) for key in models()]


def tiny_table(path: Path | str | None = None, bytes_per_param: int = BF16_BYTES) -> list[ScaleRow]:
    """Notebook 04's tiny models in the same form, from ``benchmarks/results/moe_train_cpu.json``.

    Parameters are counted from the trained models, and FLOPs per token are *measured* with torch's
    FLOP counter (``labkit.moe.tiny_gpt.flops_per_token``), not 2 x active: at this size the
    embedding lookup (no FLOPs) and attention weigh enough to tell the two apart.
    """
    b = checks.positive_int("bytes_per_param", bytes_per_param)
    data = results.read(path if path is not None else "moe_train_cpu", "moe_train")
    rows: dict[str, ScaleRow] = {}
    for r in data["rows"]:
        if r["model"] in rows:  # the same model over several seeds: same shape, same counts
            continue
        key = "tiny: " + r["model"]
        rows[r["model"]] = ScaleRow(key, r["model"], "moe" if r["ffn"] == "moe" else "dense",
                                    float(r["total_params"]), float(r["active_params"]), "trained model",
                                    float(r["flops_per_token"]), "measured (torch FLOP counter)",
                                    float(r["total_params"]) * b, None,
                                    f"{data['script']} ({data['date']}, {data['machine']})")
    return list(rows.values())


@dataclass(frozen=True)
class Savings:
    """What an MoE model saves against a dense one, and what it does not."""

    moe: ScaleRow
    dense: ScaleRow

    @property
    def flops_ratio(self) -> float:
        """Dense FLOPs per token / MoE FLOPs per token: above 1, the MoE does less work per token."""
        return self.dense.flops_per_token / self.moe.flops_per_token

    @property
    def memory_ratio(self) -> float:
        """MoE weight memory / dense weight memory: above 1, the MoE needs more memory."""
        return self.moe.weight_bytes / self.dense.weight_bytes

    def lines(self) -> list[str]:
        """The comparison in words."""
        m, d = self.moe, self.dense
        traffic = ("" if not m.traffic_bytes_per_token else
                   f"; routing moves up to {_human(m.traffic_bytes_per_token)}B per token between devices")
        return [f"{m.name} vs {d.name}: {_human(m.active_params)} of {_human(m.total_params)} parameters active "
                f"vs {_human(d.active_params)} dense",
                f"  saves: {self.flops_ratio:.3g}x fewer FLOPs per token ({_human(m.flops_per_token)} vs "
                f"{_human(d.flops_per_token)})",
                f"  does not save: {self.memory_ratio:.3g}x the weight memory ({_human(m.weight_bytes)}B vs "
                f"{_human(d.weight_bytes)}B){traffic}"]


def _human(n: float) -> str:
    """A count with a decimal prefix: 12.9G, 98.7k (bytes get a B appended by the caller)."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.3g}{prefix}"
    return f"{n:.3g}"


def compare(moe: str | ScaleRow, dense: str | ScaleRow, bytes_per_param: int = BF16_BYTES) -> Savings:
    """:class:`Savings` of ``moe`` against ``dense`` (model keys, or rows such as :func:`tiny_table`'s)."""
    rows = []
    for name, x in (("moe", moe), ("dense", dense)):
        if isinstance(x, ScaleRow):
            rows.append(x)
        elif isinstance(x, str):
            rows.append(scale_row(x, bytes_per_param))
        else:
            raise TypeError(f"{name} must be a model key such as 'mixtral-8x7b' or a ScaleRow, got {type(x).__name__}")
    if rows[0].kind != "moe" or rows[1].kind != "dense":
        raise ValueError(f"compare an MoE model with a dense one: got moe={rows[0].key} ({rows[0].kind}) and "
                         f"dense={rows[1].key} ({rows[1].kind})")
    return Savings(rows[0], rows[1])


@dataclass(frozen=True)
class MeasuredEnergy:
    """Measured GPU energy per output token of an MoE and a dense model, beside their FLOP ratio."""

    savings: Savings
    moe_j_per_token: float
    dense_j_per_token: float
    source: str

    @property
    def energy_ratio(self) -> float:
        """Dense J/token / MoE J/token: what the measurement shows the MoE saves."""
        return self.dense_j_per_token / self.moe_j_per_token


def measured_energy(moe: str = "qwen3-30b-a3b", dense: str = "qwen3-32b", gpu: str = "h100",
                    batch: int = 32) -> MeasuredEnergy:
    """ML.ENERGY's measured J/token for ``moe`` and ``dense`` (``labkit/tables/published_energy.csv``).

    The table has H100 measurements at batch cap 32 for Qwen3-30B-A3B, Qwen3-32B and Qwen3-8B; the
    point is the gap between the FLOP ratio and the energy ratio (memory traffic and expert
    dispatch cost energy that FLOPs do not count).
    """
    batch = checks.positive_int("batch", batch)
    text = resources.files("labkit").joinpath("tables/published_energy.csv").read_text()
    table = {row["key"]: row for row in csv.DictReader(text.splitlines())}

    def row_of(model_key: str) -> dict[str, str]:
        wanted = f"{model_key.replace('-', '_')}_{gpu}_b{batch}"
        if wanted not in table:
            have = ", ".join(k for k in table if k.startswith("qwen3"))
            raise ValueError(f"no measured energy for {model_key} on {gpu} at batch {batch} (looked for {wanted!r}); "
                             f"the table has: {have}")
        return table[wanted]

    m, d = row_of(moe), row_of(dense)
    return MeasuredEnergy(compare(moe, dense), float(m["value"]), float(d["value"]), m["source"])
