"""Vector search through the engine: the LMDB mirror, other processes' writes, deletes, filters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import engine
from engine.models import create_embedding_vector

ROOT = Path(__file__).resolve().parents[1]


def _vectors(n, dim=16, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _brute(matrix, q, k):
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    scores = unit @ (q / np.linalg.norm(q))
    return [int(i) for i in np.argsort(-scores, kind="stable")[:k]]


def test_find_similar_matches_brute_force(eng):
    m = _vectors(300)
    eng.store_embeddings_batch(
        [
            create_embedding_vector(f"v{i}", m[i].tolist(), "code" if i % 3 else "doc", {"i": i})
            for i in range(300)
        ]
    )
    q = m[17] + 0.01
    hits = eng.find_similar_embeddings(q, top_k=5)
    assert [h["id"] for h in hits] == [f"v{i}" for i in _brute(m, q, 5)]
    assert hits[0]["id"] == "v17" and hits[0]["metadata"] == {"i": 17}
    assert hits[0]["score"] >= hits[-1]["score"]
    docs = eng.find_similar_embeddings(q, top_k=4, source_type="doc")
    doc_rows = [i for i in range(300) if i % 3 == 0]
    assert [h["id"] for h in docs] == [f"v{doc_rows[i]}" for i in _brute(m[doc_rows], q, 4)]
    assert all(h["source_type"] == "doc" for h in docs)


def test_empty_store_and_updates(eng):
    assert eng.find_similar_embeddings([1.0, 0.0], top_k=3) == []
    eng.store_embedding(create_embedding_vector("a", [1.0, 0.0], "code", {}))
    eng.store_embedding(create_embedding_vector("b", [0.0, 1.0], "code", {}))
    assert [h["id"] for h in eng.find_similar_embeddings([1.0, 0.1], top_k=1)] == ["a"]
    eng.store_embedding(create_embedding_vector("a", [0.0, -1.0], "code", {}))  # replaced
    assert [h["id"] for h in eng.find_similar_embeddings([1.0, 0.1], top_k=1)] == ["b"]
    assert eng.delete("dspy_agent:embeddings:b") is True
    assert [h["id"] for h in eng.find_similar_embeddings([1.0, 0.1], top_k=5)] == ["a"]


def test_bad_queries_raise_typed_errors(eng):
    eng.store_embedding(create_embedding_vector("a", [1.0, 0.0], "code", {}))
    with pytest.raises(engine.errors.DimensionError):
        eng.find_similar_embeddings([1.0, 0.0, 0.0])
    with pytest.raises(engine.errors.ValidationError):
        eng.find_similar_embeddings([0.0, 0.0])
    with pytest.raises(engine.errors.ValidationError):
        eng.find_similar_embeddings([float("nan"), 1.0])


def test_vectors_from_another_process_are_found(eng):
    eng.store_embedding(create_embedding_vector("mine", [1.0, 0.0, 0.0], "code", {}))
    assert len(eng.vector_index()) == 1
    code = (
        "import engine; from engine.models import create_embedding_vector as c;"
        f"e = engine.open({str(eng.store.path)!r}, auto_migrate=False);"
        "e.store_embedding(c('theirs', [0.0, 0.0, 1.0], 'code', {})); e.close()"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
    assert eng.find_similar_embeddings([0.0, 0.1, 1.0], top_k=1)[0]["id"] == "theirs"
