"""Which exclusive classes a product's rule labels name, as tensors for the weak targets.

The same reading as ``shared_config.categories.candidate_classes``, batched for the
loss: each of a product's *most specific* rule labels names the class it is or lies
below, or, above the classes (``"Tops"`` when the classes are ``"Tops > Knits"``
...), every class below it; a label with another of the product's labels below it
names nothing of its own (the rule labeller adds every label's ancestors, so
``{"Tops", "Tops > Knits"}`` names Knits alone, ``{"Tops"}`` every top).

Only the rule categories above the classes (``parents``) need the "most specific"
test: every category at or below a class names that one class, as do its
descendants. So the map keeps, beside the [categories, classes] matrix of what
each category names, the parents' rows and which categories lie below each parent.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from keras import ops

from shared_config.categories import is_within, rule_to_class_map


@dataclass(frozen=True)
class RuleClassMap:
    named: np.ndarray  # [categories, classes] 0/1: what each category names on its own
    parents: np.ndarray  # int [parents]: the categories above the classes
    parent_below: np.ndarray  # [parents, categories] 0/1: [p, r] = r lies below parent p

    @classmethod
    def build(cls, rule_categories: list[str], classes: list[str]) -> RuleClassMap:
        named = np.zeros((len(rule_categories), len(classes)), "float32")
        for row, found in enumerate(rule_to_class_map(rule_categories, classes)):
            named[row, found] = 1
        # a parent: a category no class is at or above, with classes below it
        parents = np.array([row for row, category in enumerate(rule_categories)
                            if not any(is_within(category, c) for c in classes)
                            and named[row].any()], "int32")
        below = np.array([[other != rule_categories[p] and is_within(other, rule_categories[p])
                           for other in rule_categories] for p in parents],
                         "float32").reshape(len(parents), len(rule_categories))
        return cls(named, parents, below)

    @classmethod
    def of(cls, matrix) -> RuleClassMap:
        """A plain [categories, classes] matrix: every category names its classes, no parents."""
        if isinstance(matrix, cls):
            return matrix
        named = np.asarray(matrix, "float32")
        return cls(named, np.zeros((0,), "int32"), np.zeros((0, named.shape[0]), "float32"))

    @cached_property
    def _selector(self) -> np.ndarray:
        """[categories, parents] 0/1: picks each parent's column out of the rows' labels."""
        selector = np.zeros((self.named.shape[0], len(self.parents)), "float32")
        selector[self.parents, np.arange(len(self.parents))] = 1
        return selector

    @cached_property
    def _own(self) -> np.ndarray:
        """``named`` with the parents' rows empty: what a category names whatever else the
        row has."""
        return self.named * (1.0 - self._selector.sum(axis=1, keepdims=True))

    def candidates(self, rule_targets, columns=None):
        """[rows, classes] 0/1: the classes each row's rule labels name. ``rule_targets``:
        [rows, categories] 0/1, or, with ``columns``, [rows, len(columns)]: a sample of the
        categories holding every one the rows have (``sample_rule_categories``)."""
        def rows_of(matrix, axis=0):  # the sampled categories' rows (or columns) of a matrix
            tensor = ops.convert_to_tensor(matrix)
            return tensor if columns is None else ops.take(tensor, columns, axis=axis)

        own = ops.matmul(rule_targets, rows_of(self._own))
        if len(self.parents) == 0:
            return ops.cast(own > 0, "float32")
        # a parent names its classes where the row has it and no category below it
        superseded = ops.cast(ops.matmul(rule_targets, ops.transpose(
            rows_of(self.parent_below, axis=1))) > 0, "float32")
        specific_parents = ops.matmul(rule_targets, rows_of(self._selector)) * (1.0 - superseded)
        from_parents = ops.matmul(specific_parents, ops.convert_to_tensor(self.named[self.parents]))
        return ops.cast(own + from_parents > 0, "float32")
