"""The feature config: which product fields are inputs and how each is encoded.

One YAML file (``features.yaml`` beside this module, or ``PRODCAT_FEATURE_CONFIG``)
is the single source of truth for the Beam job's ``preprocessing_fn`` and for the
trainer's input layers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from shared_config.paths import OBJECTIVES

DEFAULT_PATH = Path(__file__).with_name("features.yaml")
KINDS = ("text", "categorical", "dense", "image")
DENSE_TRANSFORMS = ("log", "none")


class FeatureConfigError(ValueError):
    """The feature config file is missing a field or has a bad value."""


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str
    vocab_size: int = 0
    embedding_dim: int = 0
    transform: str = "none"
    image_size: int = 0


@dataclass(frozen=True)
class FeatureConfig:
    id_field: str
    num_oov_buckets: int
    features: tuple[Feature, ...]
    label_fields: dict[str, str]
    max_field_chars: int = 100_000
    group_field: str = "group_id"

    def of_kind(self, kind: str) -> list[Feature]:
        return [f for f in self.features if f.kind == kind]


def load(path: str | os.PathLike | None = None) -> FeatureConfig:
    path = Path(path or os.environ.get("PRODCAT_FEATURE_CONFIG") or DEFAULT_PATH)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise FeatureConfigError(f"cannot read feature config {path}: {err}") from err
    if not isinstance(raw, dict) or not isinstance(raw.get("features"), dict) or not raw["features"]:
        raise FeatureConfigError(f"{path}: needs a non-empty 'features' mapping")
    features = tuple(_feature(path, name, spec) for name, spec in raw["features"].items())
    labels = raw.get("labels") or {}
    if set(labels) != set(OBJECTIVES):
        raise FeatureConfigError(f"{path}: 'labels' must name exactly {list(OBJECTIVES)}")
    oov = raw.get("num_oov_buckets", 1)
    if not isinstance(oov, int) or oov < 1:
        raise FeatureConfigError(f"{path}: num_oov_buckets must be an integer >= 1")
    max_chars = raw.get("max_field_chars", 100_000)
    if not _positive_int(max_chars):
        raise FeatureConfigError(f"{path}: max_field_chars must be a positive integer")
    return FeatureConfig(
        id_field=str(raw.get("id_field", "id")),
        num_oov_buckets=oov,
        features=features,
        label_fields={objective: str(spec["field"]) for objective, spec in labels.items()},
        max_field_chars=max_chars,
        group_field=str(raw.get("group_field") or ""),
    )


def _feature(path: Path, name: str, spec) -> Feature:
    where = f"{path}: feature {name!r}"
    if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
        raise FeatureConfigError(f"{where}: 'kind' must be one of {KINDS}")
    kind = spec["kind"]
    feature = Feature(
        name=name,
        kind=kind,
        vocab_size=spec.get("vocab_size", 0),
        embedding_dim=spec.get("embedding_dim", 0),
        transform=spec.get("transform", "none"),
        image_size=spec.get("image_size", 0),
    )
    if kind in ("text", "categorical") and not _positive_int(feature.vocab_size):
        raise FeatureConfigError(f"{where}: vocab_size must be a positive integer")
    if kind == "categorical" and not _positive_int(feature.embedding_dim):
        raise FeatureConfigError(f"{where}: embedding_dim must be a positive integer")
    if kind == "dense" and feature.transform not in DENSE_TRANSFORMS:
        raise FeatureConfigError(f"{where}: transform must be one of {DENSE_TRANSFORMS}")
    if kind == "image" and not _positive_int(feature.image_size):
        raise FeatureConfigError(f"{where}: image_size (pixels per side) must be a positive integer")
    return feature


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
