"""The multi-objective classifier trainer (``python -m trainer.controller``)."""
