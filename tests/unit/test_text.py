"""ml.text: the small text model that ships in the wordllama wheel, embedding one text at a time."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from ml import text

TEXTS = ["user login failed: bad password", "authentication failure for user admin",
         "nightly disk usage report generated", "GET /api/orders 200 in 12 ms"]


def test_it_loads_from_the_package_without_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("ml.text opened a network connection")

    text._model.cache_clear()
    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    vectors = text.embed(TEXTS, 256)
    assert vectors.shape == (4, 256) and vectors.dtype == np.float32 and np.all(np.abs(vectors).sum(axis=1) > 0)
    from importlib.metadata import version

    assert text.describe(64) == {"encoder": "wordllama", "config": "l2_supercat", "dims": 64,
                                 "version": version("wordllama")}  # the release pinned in requirements.lock
    assert f"wordllama=={version('wordllama')}" in (Path(__file__).parents[2] / "requirements.lock").read_text()


def test_an_embedding_does_not_depend_on_the_texts_beside_it():
    together = text.embed([*TEXTS, TEXTS[0], None, ""], 64)
    alone = np.vstack([text.embed([t], 64) for t in TEXTS])
    assert np.array_equal(together[:4], alone)  # bit for bit: no padding, no batch effects
    assert np.array_equal(together[4], together[0])
    assert not together[5].any() and not together[6].any()  # no text: zeros


def test_similar_texts_are_near_and_fewer_dimensions_keep_the_first_ones():
    v = text.embed(TEXTS, 256)

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    assert cos(v[0], v[1]) > cos(v[0], v[2]) + 0.2 and cos(v[0], v[1]) > cos(v[0], v[3]) + 0.2
    np.testing.assert_allclose(text.embed(TEXTS, 64), v[:, :64], rtol=1e-6)
    with pytest.raises(ValueError, match="64, 128, 256"):
        text.embed(TEXTS, 100)
