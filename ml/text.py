"""Embedded text features: WordLlama's ``l2_supercat`` model, whose weights and tokenizer ship in the
``wordllama`` wheel (16 MB), so nothing is downloaded when it runs.

A text is split into the model's tokens (Llama 2's), each token looked up in a table of 256-number
vectors (a distillation of large language models' token embeddings), and the vectors averaged; the
first ``dims`` numbers are kept (the model is trained so that 64 and 128 of them still work). The
same function embeds a text in Spark (:class:`ml.spark_text.TextEmbedder`, in the pipeline) and
outside it (:mod:`ml.portable`), one text at a time, so both get the same numbers: a batch of texts
of different lengths would be padded, and the padding changes the order of the float32 sums.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

ENCODER = "wordllama"
CONFIG = "l2_supercat"
DIMENSIONS = (64, 128, 256)


@functools.lru_cache(maxsize=len(DIMENSIONS))
def _model(dims: int) -> Any:
    """The model truncated to ``dims``, loaded from the package's own files (never downloaded)."""
    from pathlib import Path

    import wordllama

    if dims not in DIMENSIONS:
        raise ValueError(f"text embedding dimensions must be one of {DIMENSIONS}, got {dims}")
    # The wheel keeps its files as the library's cache layout (weights/, tokenizers/): point it there.
    return wordllama.WordLlama.load(config=CONFIG, dim=256, trunc_dim=None if dims == 256 else dims,
                                    cache_dir=Path(wordllama.__file__).parent, disable_download=True)


def embed(texts: list[str | None], dims: int) -> np.ndarray:
    """Each text's embedding (float32, ``len(texts)`` x ``dims``); a null or empty text is zeros."""
    out = np.zeros((len(texts), dims), dtype=np.float32)
    unique = {t for t in texts if t}
    if not unique:
        return out
    ordered = sorted(unique)
    vectors = _model(dims).embed(ordered, batch_size=1)  # one at a time: no padding
    index = {t: i for i, t in enumerate(ordered)}
    for row, text in enumerate(texts):
        if text:
            out[row] = vectors[index[text]]
    return out


def describe(dims: int) -> dict[str, Any]:
    """What a model version records of the encoder that made its text features."""
    from importlib.metadata import version

    return {"encoder": ENCODER, "config": CONFIG, "dims": dims, "version": version(ENCODER)}
