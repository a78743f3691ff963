"""A real language model on a laptop: load SmolLM2-135M offline, prune it one-shot, measure it.

Read the modules in this order:

* :mod:`labkit.llm.model`: :func:`load` (SHA-256 checked GGUF file, cached as safetensors),
  :func:`model_file`, :func:`tiny_llama` for tests.
* :mod:`labkit.llm.text`: :func:`text_splits`, evaluation windows spread over Python's help topics,
  :func:`calibration_tokens` from three domains (help text, scikit-learn's dataset descriptions, random ids),
  and :func:`training_split` (text disjoint from both, for healing) with :func:`training_batches`.
* :mod:`labkit.llm.evaluate`: :func:`perplexity`, :func:`window_losses`, :func:`generate`, :func:`speed`.
* :mod:`labkit.llm.stats`: bootstrap intervals of a perplexity and paired ratios; threshold sentences.
* :mod:`labkit.llm.cloze`: a multiple-choice "which sentence comes next" task, beyond perplexity.
* :mod:`labkit.llm.oneshot`: :func:`prune` (magnitude per row / per layer / global, random, Wanda,
  SparseGPT; unstructured, 2:4, 4:8),
  :func:`input_norms`, :func:`measure_sparsity`.
* :mod:`labkit.llm.grid`: the quantization grid (b-bit codes, a scale and an offset per group) and :func:`rtn`,
  round to nearest.
* :mod:`labkit.llm.sparsegpt`: the OBS loop for one layer, :func:`~labkit.llm.sparsegpt.obs`: SparseGPT (set to
  zero), GPTQ (round to the grid) or both, each error spread over the columns not yet done.
* :mod:`labkit.llm.quantize`: :func:`quantize` a model (RTN, GPTQ, or pruning and GPTQ in one pass) and
  :func:`on_grid`, which detects weights already on a grid (SmolLM2 arrived as Q4_1: the trap).
* :mod:`labkit.llm.structured`: :func:`prune_structured`, physically smaller FFNs and fewer heads.
* :mod:`labkit.llm.size`: :func:`model_bytes` in each storage format, :func:`quantized_bytes` with integer codes.
* :mod:`labkit.llm.qlinear`: :class:`Int8Linear`, :class:`Int4Linear` and :func:`pack`, PyTorch's weight-only
  int8/int4 CPU kernels inside the model.
* :mod:`labkit.llm.heal`: :func:`heal_pruned`, a pruned model trained with its masks held fixed (distillation from
  the dense model, or next-token loss), and :func:`finetune_dense`, the control; :func:`kl_to_teacher`.
* :mod:`labkit.llm.activation`: :class:`ActivationSparsity`, input-dependent sparsity: per token, skip the inputs
  below a calibrated threshold (uniform or TEAL's greedy allocation) and, at decode, the weight rows they multiply.
* :mod:`labkit.llm.decode`: :class:`Lean`, a plain decode loop over the model's own modules (and the transposed
  layout that makes a fair dense baseline), for timing one-token steps.
* :mod:`labkit.llm.variants`: :func:`speed_variants` (masked, CSR, structured; :func:`gpu_variants` with the
  lab's kernels; :func:`quant_variants` with the int8/int4 kernels) and :func:`speeds_in_turns`, a fair speed
  comparison on your machine.

Typical use::

    model, tokenizer = llm.load()
    data = llm.text_splits(tokenizer)
    llm.perplexity(model, data["evaluation"])            # ~17.5 dense
    llm.prune(model, "wanda", "unstructured", 0.5, data["calibration"])
    llm.generate(model, tokenizer, "What is the capital of France?")
    llm.quantize(model, "gptq", bits=3, group_size=32, calibration=data["calibration"])
"""
from labkit.llm.activation import ActivationSparsity
from labkit.llm.decode import Lean
from labkit.llm.evaluate import generate, perplexity, speed, window_losses
from labkit.llm.grid import rtn
from labkit.llm.heal import OBJECTIVES, apply_masks, finetune_dense, heal_pruned, keep_masks, kl_to_teacher
from labkit.llm.model import MODEL_SHA256, ModelFileError, load, model_file, tiny_llama, verify
from labkit.llm.oneshot import METHODS, PATTERNS, input_norms, measure_sparsity, prunable_layers, prune
from labkit.llm.qlinear import Int4Linear, Int8Linear, pack
from labkit.llm.quantize import METHODS as QUANT_METHODS
from labkit.llm.quantize import on_grid, quantize
from labkit.llm.size import held_bytes, model_bytes, quantized_bytes
from labkit.llm.structured import prune_structured
from labkit.llm.text import DOMAINS, calibration_tokens, text_splits, training_batches, training_split
from labkit.llm.variants import gpu_variants, quant_variants, speed_variants, speeds_in_turns

__all__ = ["ActivationSparsity", "DOMAINS", "Int4Linear", "Int8Linear", "Lean", "METHODS", "MODEL_SHA256",
           "ModelFileError", "OBJECTIVES", "PATTERNS", "QUANT_METHODS", "apply_masks", "calibration_tokens",
           "finetune_dense", "generate", "gpu_variants", "heal_pruned", "held_bytes", "input_norms", "keep_masks",
           "kl_to_teacher", "load", "measure_sparsity", "model_bytes", "model_file", "on_grid", "pack", "perplexity",
           "prunable_layers", "prune", "prune_structured", "quant_variants", "quantize", "quantized_bytes", "rtn",
           "speed", "speed_variants", "speeds_in_turns", "text_splits", "tiny_llama", "training_batches",
           "training_split", "verify", "window_losses"]
