"""Where every file of a run lives: one set of templates read by every stage.

A run's files are laid out under ``{prefix}/runs/{run_id}/``; ``prefix`` is a
local directory or a ``gs://bucket/path`` URL (``PRODCAT_PREFIX``). Airflow
tasks, the Beam job, the trainer and the publisher all build their paths here,
so a stage never has to be told where another stage wrote its output.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

OBJECTIVES = ("exclusive", "rule_based")
SPLITS = ("train", "valid", "test")
# Every product of a split, labelled or not: the semi-supervised trainer's pool
# (train) and, all three together, the input of batch prediction.
CATALOG = "catalog"

TEMPLATES = {
    "run": "{prefix}/runs/{run_id}",
    "manifest": "{prefix}/runs/{run_id}/run.json",
    "dump": "{prefix}/runs/{run_id}/dump/",
    "tfrecords_dir": "{prefix}/runs/{run_id}/tfrecords/",
    "tfrecords": "{prefix}/runs/{run_id}/tfrecords/{objective}_{split}.tfrecords",
    "example_counts": "{prefix}/runs/{run_id}/tfrecords/counts.json",
    "transform_fn": "{prefix}/runs/{run_id}/transform_fn/",
    "quarantine": "{prefix}/runs/{run_id}/quarantine/",
    "preprocess_output": "{prefix}/runs/{run_id}/tfrecords/output.json",
    "checkpoints": "{prefix}/runs/{run_id}/checkpoints/{hparams_id}/",
    "baseline_checkpoints": "{prefix}/runs/{run_id}/checkpoints/baseline/{hparams_id}/",
    "predictions": "{prefix}/runs/{run_id}/predictions/",
    "publish_progress": "{prefix}/runs/{run_id}/predictions/published/",
    "prediction_sets": "{prefix}/runs/{run_id}/predictions/sets.json",
    "selection": "{prefix}/runs/{run_id}/selection/",
    "embeddings": "{prefix}/runs/{run_id}/embeddings/",
    "similar": "{prefix}/runs/{run_id}/similar/",
    "similar_published": "{prefix}/runs/{run_id}/similar/published/",
    "similar_sets": "{prefix}/runs/{run_id}/similar/sets.json",
    "stats": "{prefix}/runs/{run_id}/stats/",
}
RUN_SUBDIRS = ("dump", "tfrecords", "transform_fn", "quarantine", "checkpoints",
               "predictions", "embeddings", "similar", "stats")

DEFAULT_PREFIX = Path(__file__).resolve().parents[1] / ".prodcat" / "data"
ROLES = ("model", "baseline")  # the run's model, and a supervised model trained beside it
# Letters, digits and a few punctuation marks that are safe in a local path, a
# GCS object name and an Airflow run id alike; no leading dot, no "..". The same
# pattern is the trigger form's (JSON Schema, so ECMA-262 and Python alike).
ID_MAX_LENGTH = 128
ID_PATTERN = r"^(?!.*\.\.)(?!.*\n)[A-Za-z0-9_][A-Za-z0-9_.:+=-]{0,127}$"
_SAFE_ID = re.compile(ID_PATTERN)


class InvalidId(ValueError):
    """A run id or hparams id that could escape or corrupt the run's directory."""


def validate_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is safe as one path component, else raise InvalidId."""
    if not isinstance(value, str) or not value:
        raise InvalidId(f"{what} must be a non-empty string, got {value!r}")
    if ".." in value or not _SAFE_ID.fullmatch(value):  # fullmatch: "$" allows a final "\n"
        raise InvalidId(
            f"{what} {value!r} is not allowed: use 1-128 letters, digits or '_.:+=-', "
            "not starting with '.', with no '..', path separators, whitespace or "
            "control characters"
        )
    return value


def normalise_prefix(prefix: str) -> str:
    """A local prefix becomes absolute; a ``gs://`` prefix keeps its scheme."""
    if not prefix or not prefix.strip():
        raise ValueError("the path prefix is empty: set PRODCAT_PREFIX or leave it unset")
    if prefix.startswith("gs://"):
        bucket_and_path = prefix[len("gs://"):].strip("/")
        if not bucket_and_path:
            raise ValueError(f"prefix {prefix!r} names no bucket")
        return "gs://" + bucket_and_path
    if "://" in prefix:
        raise ValueError(f"prefix {prefix!r}: only local paths and gs:// URLs are supported")
    return str(Path(prefix).expanduser().resolve())


def default_prefix(env=None) -> str:
    """``PRODCAT_PREFIX`` or ``.prodcat/data`` in the project's checkout."""
    env = os.environ if env is None else env
    return normalise_prefix(env.get("PRODCAT_PREFIX") or str(DEFAULT_PREFIX))


@dataclass(frozen=True)
class RunPaths:
    """All paths of one run. Build with ``RunPaths.for_run(run_id)``."""

    prefix: str
    run_id: str

    @classmethod
    def for_run(cls, run_id: str, prefix: str | None = None) -> RunPaths:
        return cls(
            prefix=normalise_prefix(prefix) if prefix else default_prefix(),
            run_id=validate_id(run_id, "run_id"),
        )

    def _fill(self, name: str, **fields: str) -> str:
        return TEMPLATES[name].format(prefix=self.prefix, run_id=self.run_id, **fields)

    @property
    def is_remote(self) -> bool:
        return self.prefix.startswith("gs://")

    @property
    def run_dir(self) -> str:
        return self._fill("run")

    @property
    def manifest(self) -> str:
        return self._fill("manifest")

    @property
    def dump_dir(self) -> str:
        return self._fill("dump")

    @property
    def example_counts(self) -> str:
        """How many examples each ``{objective}_{split}`` holds, written beside them."""
        return self._fill("example_counts")

    @property
    def tfrecords_dir(self) -> str:
        return self._fill("tfrecords_dir")

    @property
    def transform_fn_dir(self) -> str:
        return self._fill("transform_fn")

    @property
    def quarantine_dir(self) -> str:
        return self._fill("quarantine")

    @property
    def predictions_dir(self) -> str:
        return self._fill("predictions")

    @property
    def publish_progress_dir(self) -> str:
        """How far each publisher worker got, so a re-run publish goes on from there."""
        return self._fill("publish_progress")

    @property
    def selection_dir(self) -> str:
        """Active learning's candidates and the batch it chose for labelling."""
        return self._fill("selection")

    @property
    def embeddings_dir(self) -> str:
        """The image tower, its tokeniser and one vector per product (``part-*.npz``)."""
        return self._fill("embeddings")

    @property
    def similar_dir(self) -> str:
        """Each product's nearest neighbours (``part-*.jsonl.gz``), as published."""
        return self._fill("similar")

    @property
    def similar_published_dir(self) -> str:
        return self._fill("similar_published")

    @property
    def similar_sets(self) -> str:
        """How many neighbour sets the run made: each gets a newer version."""
        return self._fill("similar_sets")

    @property
    def prediction_sets(self) -> str:
        """How many prediction sets the run made: each gets a newer version."""
        return self._fill("prediction_sets")

    @property
    def stats_dir(self) -> str:
        return self._fill("stats")

    def stats_file(self, stage: str) -> str:
        """The JSON summary one stage leaves for the run's statistics."""
        return self.stats_dir + f"{validate_id(stage, 'stage')}.json"

    def tfrecords(self, objective: str, split: str) -> str:
        """Path prefix of one objective/split; writers add ``-SSSSS-of-NNNNN``."""
        if objective not in (*OBJECTIVES, CATALOG) or split not in SPLITS:
            raise ValueError(f"unknown objective/split {objective!r}/{split!r}")
        return self._fill("tfrecords", objective=objective, split=split)

    def tfrecord_files(self, objective: str, split: str) -> str:
        """Glob pattern that matches every shard of one objective/split."""
        return self.tfrecords(objective, split) + "-*"

    @property
    def preprocess_output(self) -> str:
        """Which preprocessing wrote the TFRecords: a checkpoint made on another is stale."""
        return self._fill("preprocess_output")

    def checkpoints(self, hparams_id: str, role: str = "model") -> str:
        """The model's directory; a baseline's is apart even when its hparams are the same."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; use one of {ROLES}")
        template = "checkpoints" if role == "model" else "baseline_checkpoints"
        return self._fill(template, hparams_id=validate_id(hparams_id, "hparams_id"))

    def local_dirs(self) -> list[str]:
        """Directories to create up front on a local prefix (GCS needs none)."""
        if self.is_remote:
            return []
        return [f"{self.run_dir}/{sub}/" for sub in RUN_SUBDIRS]
