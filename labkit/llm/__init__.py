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
* :mod:`labkit.llm.sparsegpt`: the SparseGPT algorithm for one layer.
* :mod:`labkit.llm.structured`: :func:`prune_structured`, physically smaller FFNs and fewer heads.
* :mod:`labkit.llm.size`: :func:`model_bytes` in each storage format.
* :mod:`labkit.llm.heal`: :func:`heal_pruned`, a pruned model trained with its masks held fixed (distillation from
  the dense model, or next-token loss), and :func:`finetune_dense`, the control; :func:`kl_to_teacher`.
* :mod:`labkit.llm.variants`: :func:`speed_variants` (masked, CSR, structured; :func:`gpu_variants` with the
  lab's kernels) and :func:`speeds_in_turns`, a fair speed comparison on your machine.

Typical use::

    model, tokenizer = llm.load()
    data = llm.text_splits(tokenizer)
    llm.perplexity(model, data["evaluation"])            # ~17.5 dense
    llm.prune(model, "wanda", "unstructured", 0.5, data["calibration"])
    llm.generate(model, tokenizer, "What is the capital of France?")
"""
from labkit.llm.evaluate import generate, perplexity, speed, window_losses
from labkit.llm.heal import OBJECTIVES, apply_masks, finetune_dense, heal_pruned, keep_masks, kl_to_teacher
from labkit.llm.model import MODEL_SHA256, ModelFileError, load, model_file, tiny_llama, verify
from labkit.llm.oneshot import METHODS, PATTERNS, input_norms, measure_sparsity, prunable_layers, prune
from labkit.llm.size import held_bytes, model_bytes
from labkit.llm.structured import prune_structured
from labkit.llm.text import DOMAINS, calibration_tokens, text_splits, training_batches, training_split
from labkit.llm.variants import gpu_variants, speed_variants, speeds_in_turns

__all__ = ["DOMAINS", "METHODS", "MODEL_SHA256", "ModelFileError", "OBJECTIVES", "PATTERNS", "apply_masks",
           "calibration_tokens", "finetune_dense", "generate", "gpu_variants", "heal_pruned", "held_bytes",
           "input_norms", "keep_masks", "kl_to_teacher", "load", "measure_sparsity", "model_bytes", "model_file",
           "perplexity", "prunable_layers", "prune", "prune_structured", "speed", "speed_variants", "speeds_in_turns",
           "text_splits", "tiny_llama", "training_batches", "training_split", "verify", "window_losses"]
