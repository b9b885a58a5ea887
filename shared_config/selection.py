"""Active learning's names and defaults, defined once for the DAG and the selection job.

Plain constants (the DAG files import this; they import no numpy or TensorFlow).
"""
STRATEGIES = ("random", "least_confidence", "margin", "entropy", "committee", "density")
# The active-learning benchmark's choice on its validation curves (README, "Active
# learning"): density sampling, in a diverse batch that weighs spread at 0.75 against
# score (of 0.25, 0.5 and 0.75 tried).
DEFAULT_STRATEGY = "density"
DIVERSITY_WEIGHT = 0.75
