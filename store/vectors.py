"""The production path for visual similarity: vectors in Elasticsearch, neighbours on request.

Batch neighbours (``similarity/neighbours.py``) answer "similar products" for every
product at once. A catalogue whose users want them at request time — a product added
since the last run, another restriction than the run's — can keep each product's
vector in the store and let Elasticsearch search it:

- ``vector_mapping``: an ``image_embedding`` ``dense_vector`` field, indexed as HNSW
  over quantised vectors (``int8_hnsw`` by default: a quarter of float32's memory;
  ``int4_hnsw`` an eighth; ``bbq_hnsw`` a thirty-second, for 64+ dimensions), inner
  product over the tower's unit vectors. ``ProductStore`` adds it to the product index
  on the ``elasticsearch`` backend (``PRODCAT_IMAGE_EMBEDDING_DIMS``, default 64).
- ``python -m similarity.neighbours --with-vectors`` (or the DAG's *Publish the
  vectors*) sends each vector with its neighbours; the updater writes it.
- ``knn_query``: the request body for one product's k nearest, with the restriction as a
  ``filter`` inside ``knn`` (Elasticsearch filters *during* the HNSW search, so k
  results come back even for a small category) and the product itself left out.

osmem, the local store, runs no ``knn`` query (and OpenSearch's own k-NN plugin has
another syntax), so this path is tested on its request bodies and documented in the
README; ``similar_on_request`` runs it against a real Elasticsearch.
"""
from __future__ import annotations

import math

FIELD = "image_embedding"
QUANTISATIONS = ("int8_hnsw", "int4_hnsw", "bbq_hnsw", "hnsw")


def vector_mapping(dims: int, quantisation: str = "int8_hnsw", m: int = 16,
                   ef_construction: int = 100) -> dict:
    """The ``dense_vector`` field's mapping, ready to merge into the product index's."""
    if not 1 <= dims <= 4096:
        raise ValueError(f"dense_vector dims must be 1..4096, got {dims}")
    if quantisation not in QUANTISATIONS:
        raise ValueError(f"unknown quantisation {quantisation!r}; use one of {QUANTISATIONS}")
    if quantisation == "bbq_hnsw" and dims < 64:
        raise ValueError("bbq_hnsw needs at least 64 dimensions")
    return {FIELD: {"type": "dense_vector", "dims": dims, "index": True,
                    "similarity": "dot_product",  # unit vectors: the cosine, cheaper
                    "index_options": {"type": quantisation, "m": m,
                                      "ef_construction": ef_construction}}}


def knn_query(vector, k: int = 100, exclude_id: str | None = None,
              category: str | None = None, num_candidates: int | None = None,
              fields: tuple[str, ...] = ("id", "title", "image")) -> dict:
    """A search body: the ``k`` products nearest ``vector``, within ``category`` (one name of
    the predicted path, e.g. the second level's ``"Tops > Knits"``) when given."""
    values = [float(x) for x in vector]
    if not values or not all(math.isfinite(x) for x in values):
        raise ValueError("the query vector must be a non-empty list of finite numbers")
    if not 1 <= k <= 10_000:
        raise ValueError(f"k must be 1..10000, got {k}")
    filters = [{"term": {"prediction_path": category}}] if category else []
    excluded = [{"ids": {"values": [exclude_id]}}] if exclude_id else []
    knn = {"field": FIELD, "query_vector": values, "k": k,
           "num_candidates": max(k, num_candidates or 2 * k)}
    if filters or excluded:
        knn["filter"] = {"bool": {"filter": filters, "must_not": excluded}}
    return {"knn": knn, "size": k, "_source": list(fields)}


def restriction(product: dict, level: int) -> str | None:
    """The predicted category a product's neighbours share at ``level`` (0: none)."""
    path = product.get("prediction_path") or []
    if level <= 0 or not path:
        return None
    return path[min(level, len(path)) - 1]


def similar_on_request(store, product_id: str, k: int = 10, level: int = 2) -> list[dict]:
    """A product's nearest neighbours, searched by the store itself (Elasticsearch only)."""
    product = store.get(product_id)
    if FIELD not in product:
        raise ValueError(f"{product_id} has no {FIELD}: publish neighbours --with-vectors first")
    body = knn_query(product[FIELD], k, product_id, restriction(product, level))
    hits = store.backend.search(store.index, body)["hits"]["hits"]
    return [{"id": hit["_id"], "score": hit["_score"], **hit.get("_source", {})} for hit in hits]
