"""Active learning: which products the labelling team labels next."""
