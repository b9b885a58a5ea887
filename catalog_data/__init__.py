"""Real and generated catalogue data: public sources, the legacy rule labeller,
the labelling oracle and the scale generator."""
