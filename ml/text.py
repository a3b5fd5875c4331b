"""Embedded text features: by WordLlama's ``l2_supercat`` model, whose weights and tokenizer ship in
the ``wordllama`` wheel (16 MB), so nothing is downloaded when it runs; or, when
``sagemaker.text_endpoint`` names one (the ``aws`` profile), by a SageMaker endpoint serving a
Hugging Face embedding model (:func:`embed_remote`).

A text is split into the model's tokens (Llama 2's), each token looked up in a table of 256-number
vectors (a distillation of large language models' token embeddings), and the vectors averaged; the
first ``dims`` numbers are kept (the model is trained so that 64 and 128 of them still work). The
same function embeds a text in Spark (:class:`ml.spark_text.TextEmbedder`, in the pipeline) and
outside it (:mod:`ml.portable`), one text at a time, so both get the same numbers: a batch of texts
of different lengths would be padded, and the padding changes the order of the float32 sums. (A
text endpoint batches as it likes: its numbers may differ in the last bits between calls.)
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

ENCODER = "wordllama"
ENDPOINT_ENCODER = "sagemaker-endpoint"  # what a model records of texts embedded by an endpoint
# Texts per call to a text endpoint: Text Embeddings Inference refuses more by default
# (--max-client-batch-size 32).
ENDPOINT_BATCH = 32
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
    ordered = sorted({t for t in texts if t})
    vectors = _model(dims).embed(ordered, batch_size=1) if ordered else []  # one at a time: no padding
    return _spread(texts, dict(zip(ordered, vectors, strict=True)), dims)


def _spread(texts: list[str | None], found: dict[str, Any], dims: int) -> np.ndarray:
    """Each text's row of ``found`` (embeddings by distinct text), zeros for a null or empty one."""
    out = np.zeros((len(texts), dims), dtype=np.float32)
    for row, text in enumerate(texts):
        if text:
            out[row] = found[text]
    return out


def describe(dims: int) -> dict[str, Any]:
    """What a model version records of the encoder that made its text features."""
    from importlib.metadata import version

    return {"encoder": ENCODER, "config": CONFIG, "dims": dims, "version": version(ENCODER)}


def embed_remote(client: Any, texts: list[str | None], dims: int | None) -> np.ndarray:
    """Each text's embedding by the SageMaker endpoint of ``client`` (an
    :class:`ml.endpoint.EndpointClient`), which serves a Hugging Face embedding model under the
    Hugging Face Embedding Container's contract (Text Embeddings Inference): ``{"inputs": [texts]}``
    in, one array of numbers per text out. Distinct texts are sent :data:`ENDPOINT_BATCH` at a time
    (fewer if ``client.batch_records`` says so), cut to the model's longest input by the endpoint
    (``"truncate": true``); a null or empty text is zeros. ``dims``: the width the answers must
    have (None: the first answer's). Raises :class:`ml.endpoint.EndpointFailure` if the endpoint still fails after
    its retries, or answers another shape."""
    from ml.endpoint import EndpointFailure

    unique = sorted({t for t in texts if t})
    found: dict[str, np.ndarray] = {}
    size = min(client.batch_records, ENDPOINT_BATCH)
    for at in range(0, len(unique), size):
        part = unique[at:at + size]
        try:
            answer = client.invoke_json({"inputs": part, "truncate": True})
        except EndpointFailure as exc:
            raise EndpointFailure(f"text endpoint {client.endpoint}: {exc}") from None
        try:
            vectors = np.asarray(answer, dtype=np.float32)
        except (TypeError, ValueError):
            vectors = np.zeros(0, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(part):
            raise EndpointFailure(f"text endpoint {client.endpoint} answered {str(answer)[:200]!r} for {len(part)} "
                                  "texts; expected one array of numbers per text")
        dims = dims or vectors.shape[1]
        if vectors.shape[1] != dims:
            raise EndpointFailure(f"text endpoint {client.endpoint} answers {vectors.shape[1]} numbers per text; "
                                  f"the model was trained on {dims}")
        found.update(zip(part, vectors, strict=True))
    if dims is None:
        raise EndpointFailure("no text to embed, and no width to give empty texts")
    return _spread(texts, found, dims)


def endpoint_client(endpoint: str) -> Any:
    """The :class:`ml.endpoint.EndpointClient` of text endpoint ``endpoint``, configured by this
    process's settings (``sagemaker.runtime_url``, timeouts, retries)."""
    from ml.endpoint import EndpointClient
    from streamsight.settings import load_settings

    return EndpointClient.from_settings(load_settings(), endpoint)


def describe_endpoint(endpoint: str, dims: int) -> dict[str, Any]:
    """What a model version records of texts embedded by a text endpoint."""
    return {"encoder": ENDPOINT_ENCODER, "endpoint": endpoint, "dims": dims}
