"""A generated demo catalogue: a small category tree, noisy products, legacy rule labels.

Deterministic for a seed. Each product has a hidden true leaf category; the
legacy keyword rules label some products (positive-only, multi-label, with the
category's ancestors) and miss the ones whose title uses a synonym the rules do
not know; a few percent carry an exact ``exclusive_label`` from the labelling team.
"""
from __future__ import annotations

import random
from collections.abc import Iterator

# leaf path -> (words the legacy rules match, synonyms they miss)
CATEGORY_TREE = {
    "clothing > tops > t-shirts": (["t-shirt", "tee"], ["crew neck top"]),
    "clothing > tops > shirts": (["shirt"], ["button-down", "blouse"]),
    "clothing > tops > sweaters": (["sweater", "jumper"], ["knit pullover"]),
    "clothing > bottoms > trousers": (["trousers"], ["chinos", "slacks"]),
    "clothing > bottoms > jeans": (["jeans"], ["denim five-pocket"]),
    "clothing > bottoms > skirts": (["skirt"], ["midi wrap"]),
    "clothing > dresses": (["dress"], ["gown", "sundress"]),
    "shoes > sneakers": (["sneakers", "trainers"], ["runners"]),
    "shoes > boots": (["boots"], ["chelsea", "wellies"]),
    "shoes > sandals": (["sandals"], ["flip-flops", "slides"]),
    "home > kitchen > cookware": (["pan", "pot"], ["skillet", "wok"]),
    "home > kitchen > cutlery": (["cutlery", "knife"], ["flatware"]),
    "home > bedding": (["duvet", "pillow"], ["quilt", "comforter"]),
    "electronics > phones": (["smartphone", "phone"], ["handset"]),
    "electronics > headphones": (["headphones", "earbuds"], ["in-ear monitors"]),
    "electronics > laptops": (["laptop", "notebook"], ["ultrabook"]),
}
DESCRIPTION_WORDS = {
    "clothing": ["cotton", "soft", "fit", "wash", "fabric", "casual", "slim"],
    "shoes": ["sole", "leather", "lace", "comfort", "grip", "heel"],
    "home": ["stainless", "dishwasher", "kitchen", "bedroom", "cosy", "steel"],
    "electronics": ["battery", "bluetooth", "screen", "charging", "wireless", "memory"],
}
BRANDS = ["Acme", "Northwind", "Lumen", "Oakridge", "Vantage", "Nimbus", "Peregrine",
          "Solace", "Kestrel", "Tundra", "Orbit", "Willow"]
GENDERS = ["women", "men", "unisex", "kids"]
SIZES = {"clothing": ["XS", "S", "M", "L", "XL"], "shoes": ["38", "39", "40", "41", "42", "43"]}
ADJECTIVES = ["classic", "new", "premium", "essential", "vintage", "modern", "lightweight", "eco"]
DELIMITERS = [" > ", " // ", "|", " / "]


def category_and_ancestors(leaf: str) -> list[str]:
    parts = leaf.split(" > ")
    return [" > ".join(parts[: i + 1]) for i in range(len(parts))]


def rule_labels(title: str) -> list[str]:
    """The legacy keyword rules: every category whose keyword the title contains."""
    text = f" {title.lower()} "
    labels: set[str] = set()
    for leaf, (keywords, _) in CATEGORY_TREE.items():
        if any(f" {word} " in text for word in keywords):
            labels.update(category_and_ancestors(leaf))
    return sorted(labels)


def generate(n: int, seed: int = 7, exclusive_fraction: float = 0.05) -> Iterator[dict]:
    """Yield ``n`` products; ``_true_category`` is the hidden ground truth."""
    if n < 1:
        raise ValueError("the catalogue needs at least one product")
    if not 0 <= exclusive_fraction <= 1:
        raise ValueError("exclusive_fraction must be between 0 and 1")
    rng = random.Random(seed)
    leaves = sorted(CATEGORY_TREE)
    for i in range(n):
        leaf = rng.choice(leaves)
        top = leaf.split(" > ")[0]
        keywords, synonyms = CATEGORY_TREE[leaf]
        noun = rng.choice(synonyms if rng.random() < 0.35 else keywords)
        brand = rng.choice(BRANDS)
        title = f"{brand} {rng.choice(ADJECTIVES)} {noun}"
        words = rng.sample(DESCRIPTION_WORDS[top], 3) + rng.sample(ADJECTIVES, 2)
        raw_parts = leaf.split(" > ")[: rng.randint(1, len(leaf.split(" > ")))]
        exclusive = rng.random() < exclusive_fraction
        yield {
            "id": f"demo-{i:07d}",
            "title": title,
            "description": f"<p>{' '.join(words).capitalize()} {noun}.</p>",
            "brand": brand,
            "raw_category": rng.choice(DELIMITERS).join(raw_parts),
            "gender": rng.choice(GENDERS) if top in ("clothing", "shoes") else "",
            "size": rng.choice(SIZES[top]) if top in SIZES else "",
            "price": round(rng.lognormvariate(3.5, 0.8), 2),
            "image": "",
            "rule_labels": rule_labels(title),
            "exclusive_label": leaf if exclusive else "",
            "label_source": "random" if exclusive else "",
            "_true_category": leaf,
        }
