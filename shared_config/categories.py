"""The category tree as paths: ``"Tops > Knits"`` is ``Knits`` under ``Tops``.

Shared by the rule labeller (a rule's category with its ancestors), the trainer
(a prediction's path; rule categories mapped onto the exclusive classes) and the
benchmarks, so that every stage walks the tree the same way.
"""
from __future__ import annotations

SEPARATOR = " > "


def ancestors_and_self(category: str) -> list[str]:
    """``"A > B > C"`` -> ``["A", "A > B", "A > B > C"]``."""
    parts = category.split(SEPARATOR)
    return [SEPARATOR.join(parts[: i + 1]) for i in range(len(parts))]


def is_within(category: str, ancestor: str) -> bool:
    """Whether ``category`` is ``ancestor`` or lies below it in the tree."""
    return category == ancestor or category.startswith(ancestor + SEPARATOR)


def rule_to_class_map(rule_categories: list[str], classes: list[str]) -> list[list[int]]:
    """For each rule category, the exclusive classes it names on its own: the class it is or
    lies below; above the classes (``"Tops"``, when the classes are ``"Tops > Knits"`` ...),
    every class below it, one of which the product is; elsewhere none."""
    named = []
    for rule in rule_categories:
        own = [c for c, name in enumerate(classes) if is_within(rule, name)]
        named.append(own or [c for c, name in enumerate(classes) if is_within(name, rule)])
    return named


def most_specific(labels: list[str]) -> list[str]:
    """The labels with no other of them below them (``["Tops", "Tops > Knits"]`` ->
    ``["Tops > Knits"]``): the rule labeller adds every label's ancestors, which say less."""
    return [label for label in labels
            if not any(other != label and is_within(other, label) for other in labels)]


def candidate_classes(rule_labels: list[str], classes: list[str]) -> list[int]:
    """The exclusive classes a product's rule labels name: what each of its most specific
    labels names (``rule_to_class_map``), sorted, no duplicates."""
    return sorted({c for found in rule_to_class_map(most_specific(rule_labels), classes)
                   for c in found})


def pseudo_label(rule_labels: list[str], classes: list[str]) -> int:
    """The one exclusive class the rule labels name, or -1 (none, or several)."""
    found = candidate_classes(rule_labels, classes)
    return found[0] if len(found) == 1 else -1
