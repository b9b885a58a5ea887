"""The legacy rule labeller and its report against the ground truth.

A rules file maps words to categories; a product gets every category (and its
ancestors) whose word appears as a whole word in one of the rule's fields. The
labels are positive-only, multi-label and incomplete, as the original system's
were. ``python -m catalog_data.rules`` prints per-category precision and recall.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from shared_config.categories import SEPARATOR, ancestors_and_self  # noqa: F401 (re-exported)

DEFAULT_RULES = Path(__file__).with_name("legacy_rules.yaml")
DEFAULT_FIELDS = ("title", "raw_category")


@dataclass(frozen=True)
class Rule:
    words: tuple[str, ...]
    category: str
    fields: tuple[str, ...] = DEFAULT_FIELDS


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


_TOKEN = re.compile(r"[\w'-]+")
MAX_WORDS = 3  # a rule's keyword is one to three words


class RuleLabeller:
    """Matches every keyword by looking up the text's 1- to 3-word n-grams: the
    cost per product does not grow with the number of rules."""

    def __init__(self, rules: list[Rule]):
        self.rules = rules
        self._index: dict[tuple[str, ...], dict[tuple[str, ...], set[str]]] = {}
        for rule in rules:
            by_words = self._index.setdefault(rule.fields, {})
            for word in rule.words:
                key = tuple(tokens(word))
                if not 0 < len(key) <= MAX_WORDS:
                    raise ValueError(f"rule keyword {word!r} must be 1 to {MAX_WORDS} words")
                by_words.setdefault(key, set()).update(ancestors_and_self(rule.category))

    @classmethod
    def from_file(cls, path: str | Path = DEFAULT_RULES) -> RuleLabeller:
        raw = yaml.safe_load(Path(path).read_text())
        rules = []
        for i, spec in enumerate(raw.get("rules") or []):
            words, category = spec.get("words"), spec.get("category")
            if not words or not isinstance(category, str) or not category.strip():
                raise ValueError(f"{path}: rule {i + 1} needs 'words' and a 'category'")
            rules.append(Rule(tuple(words), category, tuple(spec.get("fields") or DEFAULT_FIELDS)))
        return cls(rules)

    def labels(self, product: dict) -> list[str]:
        """Every category a rule matches, with its ancestors; sorted, no duplicates."""
        found: set[str] = set()
        for fields, by_words in self._index.items():
            for field in fields:
                text = product.get(field)
                if not isinstance(text, str):
                    continue
                words = tokens(text)
                for size in range(1, MAX_WORDS + 1):
                    for start in range(len(words) - size + 1):
                        found.update(by_words.get(tuple(words[start:start + size]), ()))
        return sorted(found)


def report(pairs, categories: list[str]) -> dict:
    """Per-category precision/recall of rule labels against true categories.

    ``pairs`` yields ``(rule_labels, true_category)``; a product counts as in a
    category when its true category is that category or below it.
    """
    stats = {c: {"labelled": 0, "correct": 0, "actual": 0} for c in categories}
    products = covered = 0
    for labels, truth in pairs:
        products += 1
        covered += bool(labels)
        truths = set(ancestors_and_self(truth)) if truth else set()
        for category in truths:
            if category in stats:
                stats[category]["actual"] += 1
        for category in labels:
            if category in stats:
                stats[category]["labelled"] += 1
                stats[category]["correct"] += category in truths
    for row in stats.values():
        row["precision"] = row["correct"] / row["labelled"] if row["labelled"] else None
        row["recall"] = row["correct"] / row["actual"] if row["actual"] else None
    labelled = sum(r["labelled"] for r in stats.values())
    correct = sum(r["correct"] for r in stats.values())
    actual = sum(r["actual"] for r in stats.values())
    return {"products": products, "with_rule_labels": covered, "per_category": stats,
            "micro_precision": correct / labelled if labelled else None,
            "micro_recall": correct / actual if actual else None}


def format_report(result: dict) -> str:
    def pct(value):
        return "   -  " if value is None else f"{value:6.1%}"

    lines = [f"{'category':<28}{'actual':>8}{'labelled':>10}{'precision':>11}{'recall':>9}"]
    for category, row in sorted(result["per_category"].items()):
        lines.append(f"{category:<28}{row['actual']:>8}{row['labelled']:>10}"
                     f"{pct(row['precision']):>11}{pct(row['recall']):>9}")
    lines.append(f"products {result['products']}, with at least one rule label "
                 f"{result['with_rule_labels']} ({result['with_rule_labels'] / max(result['products'], 1):.1%}); "
                 f"micro precision {pct(result['micro_precision']).strip()}, "
                 f"micro recall {pct(result['micro_recall']).strip()}")
    return "\n".join(lines)


def main(argv=None) -> None:
    import argparse
    import gzip
    import json

    from catalog_data import reviews_catalog

    parser = argparse.ArgumentParser(prog="python -m catalog_data.rules", description=__doc__)
    parser.add_argument("--catalog-dir", type=Path, default=None,
                        help="a built catalogue (default: the demo catalogue, built if missing)")
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES)
    args = parser.parse_args(argv)
    directory = args.catalog_dir or reviews_catalog.default_dir()
    if not reviews_catalog.is_current(directory):
        reviews_catalog.build(directory)
    labeller = RuleLabeller.from_file(args.rules)
    categories = json.loads((directory / "categories.json").read_text())["categories"]
    with gzip.open(directory / "catalog.jsonl.gz", "rt") as products, \
            gzip.open(directory / "ground_truth.jsonl.gz", "rt") as truths:
        pairs = ((labeller.labels(json.loads(p)), json.loads(t)["category"])
                 for p, t in zip(products, truths))
        print(format_report(report(pairs, categories)))


if __name__ == "__main__":
    main()
