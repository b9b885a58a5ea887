"""The weak targets' candidate classes, batched, agree with the shared category tree."""
import keras
import numpy as np
import pytest
from keras import ops

from shared_config.categories import candidate_classes
from trainer.rule_classes import RuleClassMap
from trainer.ssl_gan import sample_rule_categories

CLASSES = ["Bottoms > Jeans", "Bottoms > Pants", "Tops > Knits", "Tops > Blouses",
           "Dresses > Dresses"]
RULES = ["Bottoms", "Bottoms > Jeans", "Bottoms > Pants", "Clothing", "Dresses",
         "Dresses > Dresses", "Shoes", "Tops", "Tops > Knits", "Tops > Knits > Tees",
         "Tops > Blouses"]


def test_a_parent_names_every_class_below_it_unless_a_label_below_it_says_more():
    mapping = RuleClassMap.build(RULES, CLASSES)
    assert [RULES[p] for p in mapping.parents] == ["Bottoms", "Dresses", "Tops"]
    rows = [["Tops"], ["Tops", "Tops > Knits"], ["Bottoms", "Tops", "Tops > Knits"],
            ["Shoes"], [], ["Tops", "Tops > Knits", "Tops > Knits > Tees", "Dresses"]]
    targets = np.array([[float(r in row) for r in RULES] for row in rows], "float32")
    found = np.asarray(mapping.candidates(ops.convert_to_tensor(targets)))
    assert found.tolist() == [[0, 0, 1, 1, 0], [0, 0, 1, 0, 0], [1, 1, 1, 0, 0],
                              [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 1, 0, 1]]


@pytest.mark.parametrize("seed", range(5))
def test_batched_candidates_equal_the_category_trees_on_random_labels_and_samples(seed):
    rng = np.random.default_rng(seed)
    mapping = RuleClassMap.build(RULES, CLASSES)
    rows = [sorted(set(rng.choice(RULES, rng.integers(0, 4), replace=False))) for _ in range(40)]
    targets = np.array([[float(r in row) for r in RULES] for row in rows], "float32")
    expected = np.zeros((len(rows), len(CLASSES)))
    for i, row in enumerate(rows):
        expected[i, candidate_classes(row, CLASSES)] = 1
    assert np.array_equal(np.asarray(mapping.candidates(ops.convert_to_tensor(targets))),
                          expected)
    # from a sample of the categories holding every one the rows have: the same
    held = int((targets.sum(axis=0) > 0).sum())
    columns, _ = sample_rule_categories(ops.convert_to_tensor(targets), min(held + 1, len(RULES)),
                                        keras.random.SeedGenerator(seed))
    columns = np.asarray(columns)
    sampled = mapping.candidates(ops.convert_to_tensor(targets[:, columns]), columns)
    assert np.array_equal(np.asarray(sampled), expected)


def test_a_plain_matrix_is_a_map_without_parents():
    mapping = RuleClassMap.of([[0.0, 1.0], [0.0, 0.0]])
    assert len(mapping.parents) == 0
    found = mapping.candidates(ops.convert_to_tensor([[1.0, 1.0], [0.0, 1.0]]))
    assert np.asarray(found).tolist() == [[0, 1], [0, 0]]
