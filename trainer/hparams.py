"""Training hyperparameters: defaults, validation and the ``hparams_id`` they are saved under."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from shared_config.paths import OBJECTIVES

MODEL_TYPES = ("ssl_gan", "dnn", "wide_deep", "linear")
SCHEDULES = ("joint", "exclusive_only", "rule_then_exclusive", "interleaved")
RULE_GAN_SIGNALS = ("none", "no_category")
GAN_HEADS = ("class_logits", "separate_unit")
EXCLUSIVE_LOSSES = ("plain", "logit_adjusted", "balanced")
SELF_TRAINING_EPOCHS = ("early_stopping", "first_network")
SELF_TRAINING_RULES = ("ignored", "agree", "agree_only")
ENCODER_PRETRAININGS = ("denoising", "contrastive")


@dataclass(frozen=True)
class HParams:
    model_type: str = "ssl_gan"
    objectives: tuple[str, ...] = OBJECTIVES
    schedule: str = "joint"
    pretrain_epochs: int = 2  # rule_then_exclusive: epochs on rule labels alone
    epochs: int = 5
    # on the demo catalogue: validation macro-F1 0.631 (64: 0.616), 1.4x faster; 512 is faster
    # still but scored lower on validation (README, "Training at scale")
    batch_size: int = 256
    learning_rate: float = 1e-3
    hidden_units: tuple[int, ...] = field(default=(128, 64))
    dropout: float = 0.2
    rule_threshold: float = 0.5
    seed: int = 42
    # semi-supervised GAN
    noise_dim: int = 100
    input_noise: float = 0.1  # std of Gaussian noise on the discriminator's inputs
    real_fake_weight: float = 1.0  # weight of the real/fake term (0: the network trained supervised)
    # p(real) from a unit of its own ("separate_unit"), or from the class logits with the fake
    # logit fixed at 0 ("class_logits"); the benchmark found the class scores better kept apart
    gan_head: str = "separate_unit"
    gan_encoder_gradient: float = 0.0  # share of the real/fake gradient the encoder gets (0: none)
    entropy_weight: float = 0.0  # entropy minimisation on real rows (Dai et al. 2017)
    adversarial_weight: float = 0.0  # the generator's adversarial term beside feature matching
    rule_gan_signal: str = "none"
    labelled_share: float = 0.25  # share of each batch drawn from labelled rows
    # the human labels' cross-entropy: "logit_adjusted" on logits + log(class prior) (Menon et
    # al. 2021), "balanced" with rows weighted 1 / (classes x prior), as scikit-learn's
    # class_weight="balanced"; the prior a running mean of the labelled classes (mixed half
    # and half with the uniform prior). Macro-F1 rewards the small classes
    exclusive_loss: str = "plain"
    # label smoothing of the human (and pseudo-) labels' cross-entropy (Szegedy et al. 2016):
    # the target puts 1 - label_smoothing on the label and spreads the rest over every class
    label_smoothing: float = 0.0
    # weight of the rule labels as weak targets of the exclusive head: the classes a product's
    # rule categories name through the category tree, -log p(one of them) (0: off)
    rule_to_exclusive_weight: float = 1.0
    # learn how the rules err (a confusion matrix between true and rule-named classes) instead
    # of taking the named classes as the truth
    rule_confusion: bool = True
    # human labels win: a labelled row's weak target trains the confusion only (its label
    # stands in for the predicted class), never the exclusive logits. On the reviews'
    # validation: +5.0 macro-F1 with every row labelled, -0.7 to +0.3 at 1-10%
    confusion_from_labels: bool = True
    wide: bool = False  # a linear path from the sparse inputs straight to the logits
    # epochs of pretraining over every product that teach the encoder the catalogue before the
    # labels and the GAN see it (0: none), by ``encoder_pretraining``: "denoising", a
    # bag-of-words autoencoder recovering a product's words from half of them; "contrastive",
    # two copies of a product with words dropped told apart from the batch's other products
    # (SimCSE's objective with word dropout for its noise)
    encoder_pretrain_epochs: int = 0
    encoder_pretraining: str = "denoising"
    # momentum of an exponential moving average of the discriminator's weights (Polyak
    # averaging): with early stopping, validation scores and the saved model keeps the
    # averaged weights (0: off)
    weight_averaging: float = 0.0
    # decoupled weight decay (AdamW, Loshchilov & Hutter 2019): each step shrinks the
    # discriminator's kernels (not its biases nor the rules' confusion) by learning_rate x
    # weight_decay, every row of the sparse inputs' kernels too (0: off)
    weight_decay: float = 0.0
    # the rule-based head's loss on at most this many categories a batch: those some row of the
    # batch has, and negatives drawn at random, weighted to estimate the loss over all of them
    # (0: always all of them). Off by default: on 100,000 generated products (6,799 rule
    # categories) 2,048 saved about a tenth of a training step and halved the rule-based
    # head's validation macro-F1 (0.054 -> 0.029)
    rule_sampled_categories: int = 0
    # consistency training (UDA, Xie et al. 2020): on every real row, the exclusive prediction
    # for a copy with a share of its words dropped (``consistency_drop`` of each vector
    # input's non-zero entries) is pulled towards the prediction for the row itself, held
    # fixed and sharpened by ``consistency_temperature``; rows whose own prediction is less
    # sure than ``consistency_threshold`` are left out (0: off)
    consistency_weight: float = 0.0
    consistency_drop: float = 0.3
    consistency_temperature: float = 1.0
    consistency_threshold: float = 0.0
    # interpolation consistency (manifold mixup, Verma et al. 2019; ICT, Verma et al. 2019):
    # each real row's encoded vector mixed with another row's of the batch, share lambda ~
    # Beta(interpolation_alpha, interpolation_alpha) kept >= 1/2, and the exclusive head asked
    # for the same mix of their targets: the human (or pseudo-) label where a row has one,
    # else its own prediction held fixed (0: off)
    interpolation_weight: float = 0.0
    interpolation_alpha: float = 0.5
    # the SSL-GAN's self-training (``trainer/self_training.py``): a first network labels, per
    # class, this many unlabelled products it is surest of, and a fresh network learns from
    # those pseudo-labels beside the human ones (0: off). On the reviews' validation split
    # (README, "Label efficiency"): 50 a class +2.8 and +3.0 macro-F1 at 1% and 2% labelled,
    # 25 and 100 a class a little less; training takes about twice as long
    self_training_per_class: int = 50
    # how long the second network trains: "early_stopping" (its own epoch chosen on
    # validation, as the first's) or "first_network" (as many epochs as the first network's
    # best, no choice of its own: one choice on validation in place of two)
    self_training_epochs: str = "early_stopping"
    # what the rules say about a pseudo-label (``trainer.self_training.agrees_with_rules``):
    # "ignored"; "agree": a product whose rule labels name classes is pseudo-labelled only
    # with one of them (products the rules say nothing of stay eligible); "agree_only": only
    # products whose rules name the predicted class. On the reviews' validation split
    # (README, "Label efficiency") both are level with "ignored", within a seed's spread
    self_training_rules: str = "ignored"
    # stop when validation macro-F1 has not improved for this many epochs; keep the best (0: off)
    early_stopping_patience: int = 3

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
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r}: choose one of {SCHEDULES}")
        if self.self_training_epochs not in SELF_TRAINING_EPOCHS:
            raise ValueError(f"self_training_epochs {self.self_training_epochs!r}: choose one "
                             f"of {SELF_TRAINING_EPOCHS}")
        if self.self_training_rules not in SELF_TRAINING_RULES:
            raise ValueError(f"self_training_rules {self.self_training_rules!r}: choose one "
                             f"of {SELF_TRAINING_RULES}")
        if self.gan_head not in GAN_HEADS:
            raise ValueError(f"gan_head {self.gan_head!r}: choose one of {GAN_HEADS}")
        if self.encoder_pretraining not in ENCODER_PRETRAININGS:
            raise ValueError(f"encoder_pretraining {self.encoder_pretraining!r}: choose one of "
                             f"{ENCODER_PRETRAININGS}")
        if self.exclusive_loss not in EXCLUSIVE_LOSSES:
            raise ValueError(f"exclusive_loss {self.exclusive_loss!r}: choose one of {EXCLUSIVE_LOSSES}")
        if min(self.rule_to_exclusive_weight, self.early_stopping_patience,
               self.encoder_pretrain_epochs, self.rule_sampled_categories,
               self.self_training_per_class) < 0:
            raise ValueError("rule_to_exclusive_weight, early_stopping_patience, "
                             "encoder_pretrain_epochs, rule_sampled_categories and "
                             "self_training_per_class must be >= 0")
        if self.consistency_weight < 0 or not 0 < self.consistency_drop < 1 or \
                self.consistency_temperature <= 0 or not 0 <= self.consistency_threshold < 1:
            raise ValueError("consistency_weight must be >= 0, consistency_drop in (0, 1), "
                             "consistency_temperature > 0 and consistency_threshold in [0, 1)")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError("label_smoothing must be in [0, 1)")
        if self.interpolation_weight < 0 or self.interpolation_alpha <= 0:
            raise ValueError("interpolation_weight must be >= 0 and interpolation_alpha > 0")
        if self.weight_decay < 0:
            raise ValueError("weight_decay must be >= 0")
        if not 0 <= self.weight_averaging < 1:
            raise ValueError("weight_averaging (a moving average's momentum) must be in [0, 1)")
        if self.rule_gan_signal not in RULE_GAN_SIGNALS:
            raise ValueError(f"rule_gan_signal {self.rule_gan_signal!r}: choose one of {RULE_GAN_SIGNALS}")
        if not 0 <= self.labelled_share <= 1 or self.noise_dim < 1 or self.input_noise < 0:
            raise ValueError("labelled_share must be in [0, 1], noise_dim >= 1, input_noise >= 0")
        if min(self.real_fake_weight, self.entropy_weight, self.adversarial_weight,
               self.gan_encoder_gradient) < 0:
            raise ValueError("real_fake_weight, entropy_weight, adversarial_weight and "
                             "gan_encoder_gradient must be >= 0")
        if not self.hidden_units and self.model_type in ("ssl_gan", "dnn", "wide_deep"):
            raise ValueError(f"{self.model_type} needs at least one hidden layer")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> HParams:
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
