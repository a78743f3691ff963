"""Offline, deterministic data sets for the lab.

* :func:`digits` - scikit-learn's 8x8 handwritten digits (1,797 images, bundled with the package),
  split into train / validation / test tensors. Tune on validation, report on test, once.
* :func:`text_corpus` - a character-level corpus made of Python's own help topics
  (``pydoc_data.topics``, shipped with every CPython), with a vocabulary and a train / validation split.
* :func:`pydoc_topics` - those help topics as the lab pins them. Their text changes between Python
  versions, so the lab ships the Python 3.11.7 copy (``labkit/tables/pydoc_topics.json.gz``) and checks
  its SHA-256: every Python gives the same corpus, and so the same numbers.
* :func:`stdlib_docstrings` - the docstrings of some of Python's standard-library modules, pinned the same
  way (``labkit/tables/stdlib_docstrings.json.gz``, read from Python 3.11.7 by :func:`read_stdlib_docstrings`):
  more offline English about Python, the training text of :mod:`labkit.llm.heal`.

Nothing is downloaded, and the same seed always gives the same split.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import sys
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from labkit import checks

#: The pinned help topics (Python 3.11.7's ``pydoc_data.topics``) and the SHA-256 of their JSON text.
PYDOC_TOPICS_PATH = Path(__file__).resolve().parent / "tables" / "pydoc_topics.json.gz"
PYDOC_TOPICS_SHA256 = "4717ccc51e2e7bd1eed2feddb0bcb5a7da19a1a923fd2f258cf81e4285e31683"
#: The pinned standard-library docstrings (read from Python 3.11.7) and the SHA-256 of their JSON text.
STDLIB_DOCSTRINGS_PATH = Path(__file__).resolve().parent / "tables" / "stdlib_docstrings.json.gz"
STDLIB_DOCSTRINGS_SHA256 = "07fb24357353bcfc237e0c0c9c17dacdaea6f8ca9bb13a90fd6ce610af3251e0"
#: Standard-library modules whose docstrings :func:`read_stdlib_docstrings` reads. Pure documentation of
#: portable modules: modules that define different names on different systems (``os``, ``socket``,
#: ``subprocess``, ``selectors``...) or whose names depend on how Python was built (``hashlib``, ``ssl``,
#: ``sqlite3``) are left out, so a re-read on any system gives the same text.
STDLIB_MODULES = (
    "abc", "argparse", "ast", "base64", "bisect", "calendar", "cmd", "code", "codecs", "collections",
    "collections.abc", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib",
    "dis", "doctest", "email.message", "email.utils", "enum", "filecmp", "fileinput", "fnmatch", "fractions",
    "functools", "getopt", "gettext", "glob", "graphlib", "gzip", "heapq", "hmac", "html.parser", "http.cookies",
    "inspect", "io", "ipaddress", "itertools", "json", "keyword", "linecache", "logging", "logging.handlers",
    "mailbox", "math", "mimetypes", "numbers", "operator", "optparse", "pathlib", "pickle", "pprint", "queue",
    "random", "re", "reprlib", "sched", "secrets", "shlex", "statistics", "string", "struct", "tarfile",
    "tempfile", "textwrap", "threading", "timeit", "tokenize", "trace", "traceback", "types", "typing",
    "unittest.case", "unittest.mock", "urllib.parse", "uuid", "warnings", "wave", "weakref", "xml.dom.minidom",
    "xml.etree.ElementTree", "zipfile", "zlib")


@dataclass(frozen=True)
class Split:
    """Features ``x`` (float32) and integer labels ``y`` of one part of a data set."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Digits:
    """The digits data set split three ways. Images are 8x8, pixel values scaled to [0, 1]."""

    train: Split
    val: Split
    test: Split
    n_classes: int = 10
    image_shape: tuple[int, int] = (8, 8)

    @property
    def n_features(self) -> int:
        return self.image_shape[0] * self.image_shape[1]


def _share(name: str, value: float) -> float:
    """A share of the data held out: a fraction strictly between 0 and 1 (an empty split breaks training)."""
    value = checks.fraction(name, value)
    if value == 0.0:
        raise ValueError(f"{name} must be > 0 (a held-out split needs at least one example), got 0")
    return value


def digits(seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15, flat: bool = True) -> Digits:
    """Load scikit-learn's digits as seeded, stratified train/validation/test splits.

    Args:
        seed: shuffling seed; the same seed gives the same split on every machine.
        val_fraction: share of images held out for validation (model selection, sensitivity scans).
        test_fraction: share held out for the final test score.
        flat: ``True`` gives ``x`` of shape ``(n, 64)`` for MLPs; ``False`` gives ``(n, 1, 8, 8)`` for CNNs.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    checks.nonneg_int("seed", seed)
    val_fraction = _share("val_fraction", val_fraction)
    test_fraction = _share("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 0.9:
        raise ValueError(
            f"val_fraction + test_fraction must leave at least 10% for training, got {val_fraction + test_fraction:.2f}"
        )
    if not isinstance(flat, bool):
        raise TypeError(f"flat must be True or False, got {type(flat).__name__}")

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)  # pixels are 0..16
    y = bunch.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    # val_fraction is a share of the whole set, so rescale it to the remainder.
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_fraction / (1.0 - test_fraction), random_state=seed, stratify=y_rest
    )

    def split(xs: np.ndarray, ys: np.ndarray) -> Split:
        t = torch.from_numpy(np.ascontiguousarray(xs))
        if not flat:
            t = t.reshape(-1, 1, 8, 8)
        return Split(t, torch.from_numpy(ys))

    return Digits(split(x_train, y_train), split(x_val, y_val), split(x_test, y_test))


@dataclass(frozen=True)
class TextCorpus:
    """A character-level corpus: the text, its vocabulary and encoded train/validation tensors."""

    text: str
    chars: tuple[str, ...]
    train: torch.Tensor  # int64 token ids
    val: torch.Tensor

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, s: str) -> torch.Tensor:
        """Characters to token ids; characters outside the vocabulary raise ValueError."""
        if not isinstance(s, str):
            raise TypeError(f"s must be a str, got {type(s).__name__}")
        index = {c: i for i, c in enumerate(self.chars)}
        missing = sorted({c for c in s if c not in index})
        if missing:
            raise ValueError(f"s contains characters not in the vocabulary: {missing[:10]}")
        return torch.tensor([index[c] for c in s], dtype=torch.long)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """Token ids back to text."""
        if isinstance(ids, torch.Tensor) and (ids.is_floating_point() or ids.dim() > 1):
            raise TypeError(f"ids must be a 1-D integer tensor or a list of ints, got {ids.dtype} of shape "
                            f"{tuple(ids.shape)}")
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        ids = [checks.nonneg_int(f"ids[{i}]", v) if not isinstance(v, int) or isinstance(v, bool) else v
               for i, v in enumerate(ids)]
        bad = [i for i in ids if not 0 <= int(i) < self.vocab_size]
        if bad:
            raise ValueError(f"ids must lie in [0, {self.vocab_size}), got {bad[:5]}")
        return "".join(self.chars[int(i)] for i in ids)

    def batch(self, split: str, batch_size: int, block_size: int,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random ``(inputs, next-character targets)`` windows of ``block_size`` tokens, nanoGPT style."""
        checks.choice("split", split, ("train", "val"))
        data = self.train if split == "train" else self.val
        if checks.positive_int("block_size", block_size) >= len(data):
            raise ValueError(f"block_size must be an int in [1, {len(data) - 1}], got {block_size!r}")
        checks.positive_int("batch_size", batch_size)
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}; "
                            "pass torch.Generator().manual_seed(0)")
        starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
        x = torch.stack([data[s : s + block_size] for s in starts.tolist()])
        y = torch.stack([data[s + 1 : s + 1 + block_size] for s in starts.tolist()])
        return x, y


def text_corpus(max_chars: int = 400_000, val_fraction: float = 0.1) -> TextCorpus:
    """Python's help topics as one character-level corpus.

    Topics are joined in sorted order, non-ASCII characters are dropped (so the vocabulary is
    small and the same on every CPython build), and the last ``val_fraction`` is held out.

    Args:
        max_chars: keep at most this many characters (the full text is about 700k on Python 3.11).
        val_fraction: share of the text kept for validation.
    """
    topics = pydoc_topics()
    if checks.positive_int("max_chars", max_chars) < 1000:
        raise ValueError(f"max_chars must be an int >= 1000, got {max_chars!r}")
    val_fraction = _share("val_fraction", val_fraction)
    text = "\n\n".join(topics[k] for k in sorted(topics))
    text = "".join(c for c in text if c == "\n" or 32 <= ord(c) < 127)[:max_chars]
    chars = tuple(sorted(set(text)))
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    n_val = int(len(ids) * val_fraction)
    return TextCorpus(text, chars, ids[: len(ids) - n_val], ids[len(ids) - n_val :])


@lru_cache(maxsize=1)
def pydoc_topics() -> dict[str, str]:
    """Python's help topics ``{name: text}`` as pinned by the lab (sorted by name).

    The copy shipped in ``labkit/tables`` is checked against :data:`PYDOC_TOPICS_SHA256`, so a damaged
    or edited file is an error rather than a silently different corpus. Treat the result as read-only.
    """
    return _pinned(PYDOC_TOPICS_PATH, PYDOC_TOPICS_SHA256)


def _pinned(path: Path, sha256: str) -> dict[str, str]:
    """The JSON object in the gzipped table ``path``, after checking the SHA-256 of its text."""
    blob = gzip.decompress(path.read_bytes())
    digest = hashlib.sha256(blob).hexdigest()
    if digest != sha256:
        raise RuntimeError(f"{path} has SHA-256 {digest}, expected {sha256}: the file is damaged; restore it with "
                           f"`git checkout labkit/tables/{path.name}`")
    return json.loads(blob)


def _module_text(name: str) -> str:
    """One module's documentation as plain text: its docstring, then each public class and function
    defined in it (sorted by name) with its docstring, and each class's public methods and properties."""
    import importlib
    import inspect

    module = importlib.import_module(name)
    parts = [inspect.cleandoc(module.__doc__)] if module.__doc__ else []
    for attr, obj in sorted(vars(module).items()):  # vars(): never trigger a module's deprecation __getattr__
        if attr.startswith("_") or not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        if getattr(obj, "__module__", None) != name:  # imported from elsewhere: documented there, if at all
            continue
        if isinstance(obj.__doc__, str):
            parts.append(f"{name}.{attr}\n\n{inspect.cleandoc(obj.__doc__)}")
        if inspect.isclass(obj):
            for member, value in sorted(vars(obj).items()):
                doc = getattr(value, "__doc__", None)
                is_documented = inspect.isroutine(value) or isinstance(value, (property, classmethod, staticmethod))
                # a method another library attached (transformers adds Logger.warning_once) is not the standard
                # library's documentation: it would make the text depend on what else was imported
                function = getattr(value, "__func__", getattr(value, "fget", value))
                home = getattr(function, "__module__", None) or name
                is_own = home.split(".")[0] in sys.stdlib_module_names
                if not member.startswith("_") and is_documented and is_own and isinstance(doc, str):
                    parts.append(f"{name}.{attr}.{member}\n\n{inspect.cleandoc(doc)}")
    return "\n\n".join(dict.fromkeys(p for p in parts if p.strip()))  # an alias documented twice: once


def read_stdlib_docstrings(modules: tuple[str, ...] = STDLIB_MODULES) -> dict[str, str]:
    """``{module: text}`` read now from the running Python's standard library (offline: it only imports).

    This is how the pinned copy of :func:`stdlib_docstrings` was made (on Python 3.11.7, written as
    ``json.dumps(texts, ensure_ascii=False, sort_keys=True)``, gzipped). Other Python versions document some
    functions differently, which is why the lab reads the pinned copy.
    """
    if isinstance(modules, str) or not all(isinstance(m, str) for m in modules):
        raise TypeError(f"modules must be a tuple of module names such as ('json', 're'), got {modules!r}")
    with warnings.catch_warnings():  # reading typing.io's docstring warns that it is deprecated: not our concern
        warnings.simplefilter("ignore", DeprecationWarning)
        return {name: _module_text(name) for name in sorted(modules)}


@lru_cache(maxsize=1)
def stdlib_docstrings() -> dict[str, str]:
    """The standard-library docstrings ``{module: text}`` as pinned by the lab (sorted by module name).

    Checked against :data:`STDLIB_DOCSTRINGS_SHA256` like :func:`pydoc_topics`. Treat the result as read-only.
    """
    return _pinned(STDLIB_DOCSTRINGS_PATH, STDLIB_DOCSTRINGS_SHA256)
