"""The training benchmark's command line."""
from __future__ import annotations

import argparse

import pytest

from benchmarks.train_benchmark import environment, median


def test_compare_env_reads_pairs_and_keeps_values_whole():
    assert environment("TF_NUM_INTEROP_THREADS=1,OMP_NUM_THREADS=2") == {
        "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "2"}
    assert environment("A=x=y") == {"A": "x=y"}


@pytest.mark.parametrize("text", ["", "NOEQUALS", "=1", "BAD KEY=1", "A=1,2"])
def test_compare_env_refuses_what_is_not_key_value(text):
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
        environment(text)


def test_the_median_of_an_even_count_is_the_middle_pair_s_mean():
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([4.0, 1.0, 3.0, 2.0]) == 2.5
