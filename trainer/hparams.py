"""Training hyperparameters: defaults, validation and the ``hparams_id`` they are saved under."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from shared_config.paths import OBJECTIVES

MODEL_TYPES = ("dnn", "linear")


@dataclass(frozen=True)
class HParams:
    model_type: str = "dnn"
    objectives: tuple[str, ...] = OBJECTIVES
    epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 1e-3
    hidden_units: tuple[int, ...] = field(default=(128, 64))
    dropout: float = 0.2
    rule_threshold: float = 0.5
    seed: int = 42

    def __post_init__(self):
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type {self.model_type!r}: choose one of {MODEL_TYPES}")
        unknown = set(self.objectives) - set(OBJECTIVES)
        if not self.objectives or unknown:
            raise ValueError(f"objectives {list(self.objectives)}: choose from {OBJECTIVES}")
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError("epochs, batch_size and learning_rate must be positive")
        if not 0 <= self.dropout < 1 or not 0 < self.rule_threshold < 1:
            raise ValueError("dropout must be in [0, 1) and rule_threshold in (0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "HParams":
        raw = dict(raw)
        for key in ("objectives", "hidden_units"):
            if key in raw:
                raw[key] = tuple(raw[key])
        return cls(**raw)

    @property
    def hparams_id(self) -> str:
        """Same hyperparameters, same id: a rerun finds its checkpoints again."""
        digest = hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()
        return f"{self.model_type}-{digest[:10]}"
