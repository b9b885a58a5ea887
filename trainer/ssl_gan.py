"""The multi-objective semi-supervised GAN (model type ``ssl_gan``).

As in GAN-BERT, the generator makes fake *feature vectors* in the encoder's
representation space, not fake products. The discriminator reads a vector and
gives K exclusive-class logits, with the "fake" logit fixed at 0 (Salimans et al.
2016: p(real) = sigmoid(logsumexp(logits))), plus one sigmoid logit per
rule-based category; ``gan_head="separate_unit"`` takes p(real) from a unit of
its own instead, so that telling real from fake does not move the class scores. Its loss adds, each averaged over the rows it applies to:
cross-entropy on rows with an exclusive label, real/fake loss on real and
generated rows, binary cross-entropy on rows with rule labels, and optionally
entropy minimisation on real rows and a rule-based GAN signal (generated rows
pushed towards "no category"). The generator learns by feature matching on the
discriminator's last hidden layer, optionally plus the adversarial term.

The rule-based head reads the discriminator's features but is a layer of the model's own
(``SSLGAN.rule_head``): a step computes its logits for the real rows only and, with
``rule_sampled_categories``, for a sample of a taxonomy's thousands of categories
(``sample_rule_categories``); prediction and export compute every category.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import keras
from keras import ops

from trainer.hparams import HParams
from trainer.model import (
    ModelInput,
    dense_layer,
    hidden_stack,
    input_towers,
    is_sparse,
    mean_rule_bce,
)
from trainer.optimizers import LazyAdam
from trainer.rule_classes import RuleClassMap

log = logging.getLogger("prodcat.trainer")

if TYPE_CHECKING:  # the model and its losses import no TensorFlow: they run on Keras' JAX backend
    from trainer.accelerators import Accelerator

PRIOR_MOMENTUM = 0.99
DENOISING_DROP = 0.5  # share of a product's words hidden from the encoder in its pretraining
CONTRASTIVE_DROP = 0.3  # share of its words each of a product's two contrastive copies loses
CONTRASTIVE_TEMPERATURE = 0.1  # of the cosine similarities (SimCSE's 0.05, SimCLR's 0.1)
CONTRASTIVE_PROJECTION = 128  # the projection head's width: the loss reads it, not the encoder
CONFUSION_DIAGONAL = 4.0  # softmax of 4 on the diagonal: the rules right ~3 times in 4 at first


def _float32(outputs: dict) -> dict:
    """Losses in float32 whatever the compute precision (mixed precision keeps them stable)."""
    return {name: ops.cast(value, "float32") for name, value in outputs.items()}


def _masked_mean(values, mask):
    return ops.sum(values * mask) / ops.maximum(ops.sum(mask), 1.0)


def real_logit(outputs: dict, hparams: HParams):
    """log-odds that a row is real: logsumexp of the class logits against the fixed fake
    logit 0 (``class_logits``), or a unit of its own (``separate_unit``)."""
    if hparams.gan_head == "separate_unit":
        return outputs["real_fake"][:, 0]
    return ops.logsumexp(outputs["exclusive"], axis=-1)


def candidate_mass_loss(logits, candidates):
    """-log p(the true class is one of ``candidates``): a partial-label likelihood.

    ``candidates`` is 0/1 per class (the classes a product's rule labels name); with
    one candidate it is the cross-entropy. Rows without a candidate give 0.
    """
    masked = ops.where(candidates > 0, logits, ops.full_like(logits, -1e9))
    return ops.where(ops.sum(candidates, axis=-1) > 0,
                     ops.logsumexp(logits, axis=-1) - ops.logsumexp(masked, axis=-1), 0.0)


def token_dropout(value, rate: float, seed):
    """A copy of a vector input with each of its words (non-zero entries) zeroed with
    probability ``rate``: a dense tensor, or a sparse one (TensorFlow's ``SparseTensor``,
    JAX's ``BCOO``) whose stored values are masked, so that it stays sparse."""
    stored = getattr(value, "values", None)
    if stored is None:
        stored = getattr(value, "data", None)
    if stored is None:  # dense
        return value * ops.cast(keras.random.uniform(ops.shape(value), seed=seed) >= rate,
                                value.dtype)
    keep = ops.cast(keras.random.uniform(ops.shape(stored), seed=seed) >= rate, stored.dtype)
    if is_sparse(value):
        import tensorflow as tf

        return tf.SparseTensor(value.indices, stored * keep, value.dense_shape)
    from jax.experimental import sparse

    return sparse.BCOO((stored * keep, value.indices), shape=value.shape)


def consistency_loss(clean_logits, noisy_logits, temperature: float = 1.0,
                     threshold: float = 0.0):
    """UDA's consistency term (Xie et al. 2020, eq. 3 with its sharpening and confidence
    mask): KL(sharpened p(y | x), held fixed || p(y | noised x)), averaged over the rows
    whose own prediction's top probability reaches ``threshold``."""
    target = ops.stop_gradient(ops.softmax(clean_logits / temperature, axis=-1))
    sure = ops.cast(ops.max(ops.stop_gradient(ops.softmax(clean_logits, axis=-1)), axis=-1)
                    >= threshold, "float32")
    kl = ops.sum(target * (ops.log(target + 1e-8) - ops.log_softmax(noisy_logits, axis=-1)),
                 axis=-1)
    return _masked_mean(kl, sure)


def contrastive_loss(first, second, temperature: float = CONTRASTIVE_TEMPERATURE):
    """SimCSE's unsupervised objective (Gao et al. 2021, eq. 1), both ways round: with
    sim the cosine similarity and row i's two copies ``first[i]`` and ``second[i]``,
    -log e^(sim(first_i, second_i) / t) / sum_j e^(sim(first_i, second_j) / t), the other
    rows of the batch the negatives; per row, the mean of that and its mirror image."""
    first = first / ops.maximum(ops.norm(first, axis=-1, keepdims=True), 1e-8)
    second = second / ops.maximum(ops.norm(second, axis=-1, keepdims=True), 1e-8)
    similarity = ops.matmul(first, ops.transpose(second)) / temperature
    matching = ops.diagonal(similarity)
    return 0.5 * (ops.logsumexp(similarity, axis=1) - matching) + 0.5 * (
        ops.logsumexp(similarity, axis=0) - matching)


def labels_where_known(probabilities, targets: dict, weights: dict):
    """``probabilities`` with each labelled row's (``weights["exclusive"]`` 1) replaced by
    its label, one-hot."""
    labelled = ops.expand_dims(weights["exclusive"], -1)
    known = ops.one_hot(ops.cast(targets["exclusive"], "int32"), ops.shape(probabilities)[-1])
    return labelled * known + (1.0 - labelled) * probabilities


def interpolation_targets(logits, targets: dict, weights: dict):
    """What each real row's class distribution should be: its label one-hot where it has
    one, else its own prediction, held fixed (ICT's target)."""
    guess = ops.stop_gradient(ops.softmax(logits, axis=-1))
    return labels_where_known(guess, targets, weights) if "exclusive" in targets else guess


def interpolation_loss(mixed_logits, row_targets, partner, share):
    """Manifold mixup / interpolation consistency (Verma et al. 2019): with row i's
    encoded vector mixed as ``share_i * h_i + (1 - share_i) * h_partner(i)``, the
    cross-entropy of its logits against ``share_i * t_i + (1 - share_i) * t_partner(i)``
    (``row_targets``: ``interpolation_targets``), averaged over the rows."""
    target = share * row_targets + (1.0 - share) * ops.take(row_targets, partner, axis=0)
    return ops.mean(-ops.sum(target * ops.log_softmax(mixed_logits, axis=-1), axis=-1))


def sample_rule_categories(targets, size: int, seed):
    """``(columns, column_weights)``: the rule-based categories a batch's loss is computed on,
    ``size`` of them (negative sampling, as word2vec's or Jean et al.'s 2015 sampled losses).

    Every category some row of the batch has comes first (weight 1); the rest are drawn
    uniformly from the categories no row has, each weighted (categories no row has) /
    (those drawn), so that the weighted sum over the sample is an unbiased estimate of the
    sum over every category. Should the batch hold more categories than ``size``, a
    uniform draw of them is kept, weighted (categories held) / ``size``, and no
    negative is drawn. ``targets``: [batch, categories] 0/1; shapes stay static (``jit``).
    """
    total = ops.shape(targets)[-1]
    present = ops.cast(ops.max(targets, axis=0) > 0, "float32")
    noise = keras.random.uniform((total,), seed=seed)
    _, columns = ops.top_k(2.0 * present + noise, k=size)  # present ones first, at random
    held = ops.sum(present)
    chosen_present = ops.take(present, columns)
    negative_weight = (ops.cast(total, "float32") - held) / ops.maximum(size - held, 1.0)
    present_weight = ops.maximum(held / size, 1.0)
    return columns, chosen_present * present_weight + (1.0 - chosen_present) * negative_weight


def rule_based_bce(targets, logits, column_weights=None, categories=None):
    """Per row, the mean binary cross-entropy over the rule-based categories; with
    ``column_weights`` (``sample_rule_categories``), ``logits`` and ``targets`` are a sample
    of the ``categories`` columns and the mean is its weighted estimate.

    ``targets`` may be a TensorFlow ``SparseTensor`` (every category, no sample):
    ``trainer.sparse_targets`` reads it without making it dense."""
    if column_weights is None:
        return mean_rule_bce(targets, logits)
    bce = ops.binary_crossentropy(targets, logits, from_logits=True)
    return ops.sum(bce * column_weights, axis=-1) / ops.cast(categories, "float32")


def discriminator_losses(real: dict, fake: dict, targets: dict, weights: dict,
                         hparams: HParams, real_for_gan: dict | None = None,
                         log_prior=None, rule_class_map=None, confusion=None,
                         rule_sample=None, held_rule_targets=None) -> dict:
    """The discriminator's loss terms (backend-neutral ``keras.ops``); ``real_for_gan``:
    the real rows' outputs for the real/fake term, if they differ from ``real``;
    ``log_prior``: log class prior added to the exclusive logits in the losses
    (logit adjustment); ``rule_class_map``: a ``RuleClassMap`` (or a [rule categories,
    classes] 0/1 matrix), which exclusive classes rule labels name (weak targets);
    ``confusion``: [true class, class the rules name] row-stochastic: how the rules err, learnt;
    ``rule_sample``: ``(columns, column_weights)`` when the rule-based logits of ``real``
    and ``fake`` are those of a sample of the categories (``sample_rule_categories``);
    ``held_rule_targets``: when ``real``'s rule-based logits are those of the rows with rule
    labels only, those rows' targets (``SSLGAN._rows_with_rule_labels``)."""
    real_for_gan = real if real_for_gan is None else real_for_gan
    rule_targets, columns, column_weights = targets.get("rule_based"), None, None
    if rule_sample is not None:  # the sampled categories' columns (every one a row has)
        columns, column_weights = rule_sample
        rule_targets = ops.take(rule_targets, columns, axis=1)
    terms = {"real_fake": hparams.real_fake_weight * (
        ops.mean(ops.softplus(-real_logit(real_for_gan, hparams)))
        + ops.mean(ops.softplus(real_logit(fake, hparams))))}
    logits = real["exclusive"]
    if "exclusive" in targets:
        adjusted = logits + (log_prior if hparams.exclusive_loss == "logit_adjusted" else 0.0)
        if hparams.label_smoothing > 0:
            cross_entropy = keras.losses.categorical_crossentropy(
                ops.one_hot(ops.cast(targets["exclusive"], "int32"), ops.shape(logits)[-1]),
                adjusted, from_logits=True, label_smoothing=hparams.label_smoothing)
        else:
            cross_entropy = keras.losses.sparse_categorical_crossentropy(
                targets["exclusive"], adjusted, from_logits=True)
        row_weights = weights["exclusive"]
        if hparams.exclusive_loss == "balanced":  # each class counts as much as any other
            classes = ops.cast(ops.shape(logits)[-1], "float32")
            inverse = 1.0 / (classes * ops.exp(log_prior))
            row_weights = row_weights * ops.take(inverse, ops.cast(targets["exclusive"], "int32"))
        terms["exclusive"] = ops.sum(cross_entropy * row_weights) / ops.maximum(
            ops.sum(weights["exclusive"]), 1.0)
    if "rule_based" in targets and rule_class_map is not None \
            and hparams.rule_to_exclusive_weight > 0:
        # a product's rule categories name candidate classes; human labels win where both exist
        candidates = RuleClassMap.of(rule_class_map).candidates(rule_targets, columns)
        has_candidates = ops.cast(ops.sum(candidates, axis=-1) > 0, "float32")
        if confusion is None:
            weak = candidate_mass_loss(logits, candidates)
            weak_rows = (1.0 - weights.get("exclusive", 0.0)) * has_candidates
        else:
            # p(the rules name c) = sum over true classes k of p(k) confusion[k, c]; human-
            # labelled rows with rule labels too show the confusion directly, so they count
            probabilities = ops.softmax(logits, axis=-1)
            if hparams.confusion_from_labels and "exclusive" in targets:
                # a human-labelled row teaches the confusion from its label, not its logits
                probabilities = labels_where_known(probabilities, targets, weights)
            named = ops.matmul(probabilities, confusion)
            weak = -ops.log(ops.sum(named * candidates, axis=-1) + 1e-7)
            weak_rows = has_candidates
        terms["rule_to_exclusive"] = hparams.rule_to_exclusive_weight * _masked_mean(
            weak, weak_rows)
    if "rule_based" in targets:
        # every category's count, which a sample's weighted mean divides by
        categories = None if rule_sample is None else ops.shape(targets["rule_based"])[-1]
        if held_rule_targets is None:
            bce = rule_based_bce(rule_targets, real["rule_based"], column_weights, categories)
            terms["rule_based"] = _masked_mean(bce, weights["rule_based"])
        else:  # the rows with rule labels only: each has weight 1
            bce = rule_based_bce(held_rule_targets, real["rule_based"])
            terms["rule_based"] = ops.sum(bce) / ops.maximum(
                ops.cast(ops.shape(bce)[0], "float32"), 1.0)
        if hparams.rule_gan_signal == "no_category":
            terms["rule_fake"] = ops.mean(rule_based_bce(
                ops.zeros_like(fake["rule_based"]), fake["rule_based"], column_weights,
                categories))
    if hparams.entropy_weight > 0:
        probabilities = ops.softmax(real["exclusive"], axis=-1)
        entropy = -ops.sum(probabilities * ops.log(probabilities + 1e-8), axis=-1)
        terms["entropy"] = hparams.entropy_weight * ops.mean(entropy)
    return terms


def generator_loss(real: dict, fake: dict, hparams: HParams):
    matching = ops.mean(ops.square(ops.mean(ops.stop_gradient(real["features"]), axis=0)
                                   - ops.mean(fake["features"], axis=0)))
    adversarial = ops.mean(ops.softplus(-real_logit(fake, hparams)))
    return matching + hparams.adversarial_weight * adversarial


class SSLGAN(keras.Model):
    def __init__(self, encoder: keras.Model, discriminator: keras.Model, generator: keras.Model,
                 rule_head: keras.layers.Dense, hparams: HParams, wide: keras.Model | None = None,
                 rule_class_map=None, **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.discriminator, self.generator = encoder, discriminator, generator
        # the rule-based logits from the discriminator's features: a layer of its own, so that
        # training computes a sample of its categories and the generated rows none of them
        self.rule_head = rule_head
        self.wide = wide  # optional linear logits from the sparse inputs, added for real rows
        self.hparams = hparams
        self.rule_class_map = None if rule_class_map is None else RuleClassMap.of(rule_class_map)
        self.seed_generator = keras.random.SeedGenerator(hparams.seed)
        classes = discriminator.output["exclusive"].shape[-1]
        # how the rules err: logits of p(rules name c | true class k), near the identity at first
        self.confusion_logits = self.add_weight(
            shape=(classes, classes), name="rule_confusion_logits", trainable=hparams.rule_confusion,
            initializer=keras.initializers.Identity(CONFUSION_DIAGONAL))
        # running mean of the labelled classes' frequencies: the prior of logit adjustment
        self.class_prior = self.add_weight(
            shape=(classes,), name="class_prior",
            initializer="ones", trainable=False)
        self.built = True  # its parts are built functional models: it can be saved before a call
        self.trackers = {name: keras.metrics.Mean(name=name) for name in (
            "d_loss", "g_loss", "exclusive", "rule_based", "real_fake", "rule_to_exclusive",
            "consistency", "interpolation")}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def compile(self, d_optimizer, g_optimizer, jit_compile=False, steps_per_execution=1):
        super().compile(jit_compile=jit_compile, steps_per_execution=steps_per_execution)
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

    def call(self, inputs, training=False):
        outputs = self.discriminator(self.encoder(inputs, training=training), training=training)
        return self._with_wide(self._with_rules(outputs), inputs, training)

    def _with_rules(self, outputs: dict, columns=None) -> dict:
        """The discriminator's outputs with the rule-based logits: every category's, or
        those of ``columns`` only (a [features, columns] product instead of [features, all])."""
        features = outputs["features"]
        if columns is None:
            return {**outputs, "rule_based": self.rule_head(features)}
        kernel = ops.cast(ops.take(self.rule_head.kernel, columns, axis=1), features.dtype)
        bias = ops.cast(ops.take(self.rule_head.bias, columns), features.dtype)
        return {**outputs, "rule_based": ops.matmul(features, kernel) + bias}

    def _with_wide(self, outputs: dict, inputs, training=False, columns=None) -> dict:
        if self.wide is None:
            return outputs
        linear = self.wide(inputs, training=training)
        if columns is not None:
            linear = {**linear, "rule_based": ops.take(linear["rule_based"], columns, axis=1)}
        return {name: value + linear[name] if name in linear else value
                for name, value in outputs.items()}

    def _rule_sample(self, targets):
        """``(columns, column_weights)`` of this batch's rule-based categories when the head
        has more than ``rule_sampled_categories``; None: every category."""
        size = self.hparams.rule_sampled_categories
        if "rule_based" not in targets or not size or \
                size >= self.rule_head.units:
            return None
        return sample_rule_categories(targets["rule_based"], size, self.seed_generator)

    def _rows_with_rule_labels(self, targets, rule_sample):
        """``(rows, their targets)`` when the rule-based term can skip the rows without rule
        labels (weight 0: their logits are wasted work, a seventh of a batch on a generated
        catalogue): sparse targets (TensorFlow's input pipeline), every category, no wide
        path. None: every row's logits."""
        if not is_sparse(targets.get("rule_based")) or rule_sample is not None or \
                self.wide is not None:
            return None
        from trainer.sparse_targets import rows_with_targets  # TensorFlow: its sparse targets

        return rows_with_targets(targets["rule_based"])

    @property
    def _learns_confusion(self) -> bool:
        return (self.hparams.rule_confusion and self.rule_class_map is not None
                and self.hparams.rule_to_exclusive_weight > 0)

    def _confusion(self):
        if not self._learns_confusion:
            return None
        return ops.softmax(self.confusion_logits, axis=-1)

    def _log_prior(self, targets, weights):
        """Update the running class prior from this batch's labels; its log, or None."""
        if self.hparams.exclusive_loss == "plain" or "exclusive" not in targets:
            return None
        counts = ops.sum(ops.one_hot(targets["exclusive"], ops.shape(self.class_prior)[0])
                         * ops.expand_dims(weights["exclusive"], -1), axis=0)
        total = ops.sum(counts)
        frequencies = counts / ops.maximum(total, 1.0)
        prior = self.class_prior / ops.sum(self.class_prior)
        momentum = ops.where(total > 0, PRIOR_MOMENTUM, 1.0)
        self.class_prior.assign(momentum * prior + (1 - momentum) * frequencies)
        # mixed with the uniform prior: a class no label has shown yet is not pushed up without end
        classes = ops.cast(ops.shape(self.class_prior)[0], "float32")
        return ops.log(0.5 * self.class_prior / ops.sum(self.class_prior) + 0.5 / classes)

    @property
    def _vector_inputs(self) -> list[str]:
        """The encoder's vector inputs (text: a word per entry), by name."""
        return [name for name, spec in self.encoder.input.items()
                if len(spec.shape) == 2 and spec.shape[-1] > 1]

    def _token_dropout(self, inputs: dict) -> dict:
        """``inputs`` with words dropped from each vector input (text), the rest as they are."""
        vectors = self._vector_inputs
        return {name: token_dropout(value, self.hparams.consistency_drop, self.seed_generator)
                if name in vectors else value for name, value in inputs.items()}

    def _d_variables(self) -> list:
        """What the discriminator's loss trains: encoder, discriminator, the rule-based head,
        the wide path, and the rules' confusion when it is learnt."""
        return self.encoder.trainable_weights + self.discriminator.trainable_weights + \
            self.rule_head.trainable_weights + (
            self.wide.trainable_weights if self.wide is not None else []) + (
            [self.confusion_logits] if self._learns_confusion else [])

    def _step_losses(self, inputs, targets, weights, noise, log_prior):
        """One forward pass: ``(d_loss, g_loss, terms)``, backend-neutral."""
        # Real rows: encoder, discriminator, the rule-based logits of this batch's sample of
        # categories (all of them when they are few), plus the wide path's logits if any.
        rule_sample = self._rule_sample(targets)
        columns = None if rule_sample is None else rule_sample[0]
        encoded = self.encoder(inputs, training=True)
        held = self._rows_with_rule_labels(targets, rule_sample)
        if held is None:
            real = _float32(self._with_wide(
                self._with_rules(self.discriminator(encoded, training=True), columns), inputs,
                training=True, columns=columns))
        else:  # the rule-based logits of the rows with rule labels only
            real = self.discriminator(encoded, training=True)
            real = _float32({**real, "rule_based": self.rule_head(
                ops.take(real["features"], held[0], axis=0))})
        real_for_gan = None
        if self.hparams.gan_encoder_gradient != 1:  # scale what the GAN teaches the encoder
            scaled = ops.stop_gradient(encoded) + self.hparams.gan_encoder_gradient * (
                encoded - ops.stop_gradient(encoded))
            real_for_gan = _float32(self.discriminator(scaled, training=True))
        # Fake rows: generated feature vectors through the discriminator alone (its
        # rule-based logits only where the rule-based GAN signal needs them).
        fake = self.discriminator(self.generator(noise, training=True), training=True)
        if self.hparams.rule_gan_signal == "no_category":
            fake = self._with_rules(fake, columns)
        fake = _float32(fake)
        # Discriminator: supervised, weak, rule-based and real/fake terms; generator:
        # feature matching.
        terms = discriminator_losses(real, fake, targets, weights, self.hparams, real_for_gan,
                                     log_prior, self.rule_class_map, self._confusion(),
                                     rule_sample, None if held is None else held[1])
        # Consistency: the same real rows with words dropped should get the same classes.
        if self.hparams.consistency_weight > 0:
            noised = self._token_dropout(inputs)
            noisy = self._with_wide(self.discriminator(self.encoder(noised, training=True),
                                                       training=True), noised, training=True)
            terms["consistency"] = self.hparams.consistency_weight * consistency_loss(
                real["exclusive"], ops.cast(noisy["exclusive"], "float32"),
                self.hparams.consistency_temperature, self.hparams.consistency_threshold)
        # Interpolation: a mix of two rows' encodings should get the same mix of their classes.
        if self.hparams.interpolation_weight > 0:
            terms["interpolation"] = self.hparams.interpolation_weight * self._interpolation(
                encoded, real["exclusive"], targets, weights)
        return sum(terms.values()), generator_loss(real, fake, self.hparams), terms

    def _interpolation(self, encoded, logits, targets, weights):
        """``interpolation_loss`` for this batch: each row mixed with a row drawn by a
        shuffle of the batch, its share from Beta(alpha, alpha), the larger part kept."""
        rows = ops.shape(encoded)[0]
        partner = keras.random.shuffle(ops.arange(rows), seed=self.seed_generator)
        alpha = self.hparams.interpolation_alpha
        share = keras.random.beta((rows, 1), alpha, alpha, seed=self.seed_generator)
        share = ops.maximum(share, 1.0 - share)  # the row itself stays the larger part (MixMatch)
        mixed = ops.cast(share, encoded.dtype) * encoded + ops.cast(1.0 - share, encoded.dtype) \
            * ops.take(encoded, partner, axis=0)
        mixed_logits = ops.cast(self.discriminator(mixed, training=True)["exclusive"], "float32")
        return interpolation_loss(mixed_logits, interpolation_targets(logits, targets, weights),
                                  partner, share)

    def train_step(self, data):
        """TensorFlow's train step (``fit``); on JAX, ``jax_train_step`` is the same step."""
        import tensorflow as tf

        inputs, targets, weights = data
        batch = ops.shape(next(iter(inputs.values())))[0]
        noise = keras.random.normal((batch, self.hparams.noise_dim), seed=self.seed_generator)
        # Gradients are summed over replicas (MirroredStrategy): each replica's mean counts 1/n.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        log_prior = self._log_prior(targets, weights)
        with tf.GradientTape() as d_tape, tf.GradientTape() as g_tape:
            d_loss, g_loss, terms = self._step_losses(inputs, targets, weights, noise, log_prior)
            scaled_d_loss = self.d_optimizer.scale_loss(d_loss / replicas)
            scaled_g_loss = self.g_optimizer.scale_loss(g_loss / replicas)
        d_vars = self._d_variables()
        self.d_optimizer.apply_gradients(zip(d_tape.gradient(scaled_d_loss, d_vars), d_vars))
        g_vars = self.generator.trainable_weights
        self.g_optimizer.apply_gradients(zip(g_tape.gradient(scaled_g_loss, g_vars), g_vars))
        for name, value in {"d_loss": d_loss, "g_loss": g_loss, **terms}.items():
            if name in self.trackers:
                self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def _jax_groups(self) -> tuple[list, list, list]:
        """``jax_train_step``'s variables: the discriminator's, the generator's, the rest."""
        d_vars, g_vars = self._d_variables(), self.generator.trainable_weights
        return d_vars, g_vars, [v for v in self.variables
                                if all(v is not w for w in d_vars + g_vars)]

    def jax_train_step(self):
        """The same train step as a pure function for ``jax.jit`` (Keras' JAX backend, where
        ``fit`` knows one optimizer and this model has two): ``step(state, data, key) ->
        (state, logs)``, ``state`` from ``jax_state()``, put back with ``assign_jax_state``."""
        import jax

        d_vars, g_vars, others = self._jax_groups()

        def losses(d_values, g_values, other_values, data, noise):
            inputs, targets, weights = data
            mapping = list(zip(d_vars, d_values)) + list(zip(g_vars, g_values)) + list(
                zip(others, other_values))
            with keras.StatelessScope(state_mapping=mapping) as scope:
                log_prior = self._log_prior(targets, weights)
                d_loss, g_loss, terms = self._step_losses(inputs, targets, weights, noise, log_prior)
            updated = [scope.get_current_value(v) for v in others]
            return d_loss, g_loss, terms, updated

        def step(state, data, key):
            d_values, g_values, other_values, d_opt, g_opt = state
            batch = ops.shape(next(iter(data[0].values())))[0]
            noise = jax.random.normal(key, (batch, self.hparams.noise_dim))
            # the discriminator's gradient, with the generator held; then the generator's
            def d_loss_of(dv):
                d_loss, g_loss, terms, updated = losses(dv, g_values, other_values, data, noise)
                return d_loss, (g_loss, terms, updated)

            (d_loss, (g_loss, terms, updated)), d_grads = jax.value_and_grad(
                d_loss_of, has_aux=True)(d_values)
            g_grads = jax.grad(lambda gv: losses(d_values, gv, other_values, data, noise)[1])(
                g_values)
            d_values, d_opt = self.d_optimizer.stateless_apply(d_opt, d_grads, d_values)
            g_values, g_opt = self.g_optimizer.stateless_apply(g_opt, g_grads, g_values)
            logs = {"d_loss": d_loss, "g_loss": g_loss, **terms}
            return (d_values, g_values, updated, d_opt, g_opt), logs

        return step

    def jax_state(self) -> tuple:
        """The variables' values in ``jax_train_step``'s order (building the optimizers)."""
        d_vars, g_vars, others = self._jax_groups()
        self.d_optimizer.build(d_vars)
        self.g_optimizer.build(g_vars)
        return ([v.value for v in d_vars], [v.value for v in g_vars], [v.value for v in others],
                [v.value for v in self.d_optimizer.variables],
                [v.value for v in self.g_optimizer.variables])

    def assign_jax_state(self, state: tuple) -> None:
        d_vars, g_vars, others = self._jax_groups()
        groups = (d_vars, g_vars, others, self.d_optimizer.variables, self.g_optimizer.variables)
        for variables, values in zip(groups, state):
            for variable, value in zip(variables, values):
                variable.assign(value)

    @property
    def averages_weights(self) -> bool:
        return bool(self.hparams.weight_averaging)

    def use_averaged_weights(self) -> None:
        """Put the discriminator's moving averages in place of its weights."""
        self.d_optimizer.finalize_variable_values(self._d_variables())

    def pretrain_encoder(self, batches, steps_per_epoch: int, epochs: int) -> dict:
        """Teach the encoder the catalogue before any label or GAN, from every product
        (``hparams.encoder_pretraining``): a denoising bag-of-words autoencoder (half of
        each product's words dropped, all of them to be recovered from the encoder's vector),
        or contrastive learning (two copies of each product, each with some of its words
        dropped, to be told apart from the batch's other products: ``contrastive_loss``).
        ``batches`` yields ``(inputs, ...)``; the answer: the loss after each epoch."""
        vectors = self._vector_inputs
        if not vectors or epochs < 1:
            return {}
        inputs = {name: keras.Input(spec.shape[1:], dtype=spec.dtype, name=name)
                  for name, spec in self.encoder.input.items()}

        def noised(rate, seed):
            return {name: keras.layers.Dropout(rate, seed=seed)(tensor)
                    if name in vectors else tensor for name, tensor in inputs.items()}

        seed = self.hparams.seed
        if self.hparams.encoder_pretraining == "contrastive":
            width = self.encoder.output.shape[-1]
            projection = keras.Sequential([
                keras.Input((width,)), keras.layers.Dense(width, activation="relu"),
                keras.layers.Dense(CONTRASTIVE_PROJECTION)], name="projection_head")
            # the two copies' projections side by side: [batch, 2, projection]
            pair = ops.stack([projection(self.encoder(noised(CONTRASTIVE_DROP, seed))),
                              projection(self.encoder(noised(CONTRASTIVE_DROP, seed + 1)))],
                             axis=1)
            pretraining = keras.Model(inputs, pair, name="contrastive_pretraining")

            def loss(_, copies):  # the targets are not read: each product is its own class
                return contrastive_loss(copies[:, 0], copies[:, 1])

            loss_name = "contrastive_loss"
        else:
            width = sum(self.encoder.input[name].shape[-1] for name in vectors)
            words = keras.layers.Dense(width, name="bag_of_words_logits")(
                self.encoder(noised(DENOISING_DROP, seed)))
            pretraining = keras.Model(inputs, words, name="denoising_autoencoder")
            loss = keras.losses.BinaryCrossentropy(from_logits=True)
            loss_name = "reconstruction_loss"
        pretraining.compile(optimizer=keras.optimizers.Adam(self.hparams.learning_rate),
                            loss=loss)

        import tensorflow as tf

        def dense_with_targets(row_inputs, *_):
            # the pretraining sees its inputs dense: the dropout noise acts on every word
            row_inputs = {name: tf.sparse.to_dense(value) if isinstance(value, tf.SparseTensor)
                          else value for name, value in row_inputs.items()}
            present = [tf.cast(row_inputs[name] > 0, "float32") for name in vectors]
            # the autoencoder's targets: which words each product has (contrastive: unread)
            return row_inputs, present[0] if len(present) == 1 else tf.concat(present, -1)

        def progress(epoch, logs):
            log.info("encoder pretraining (%s): epoch %d/%d, %s %.4f",
                     self.hparams.encoder_pretraining, epoch + 1, epochs, loss_name, logs["loss"])

        history = pretraining.fit(batches.map(dense_with_targets),
                                  steps_per_epoch=steps_per_epoch, epochs=epochs, verbose=0,
                                  callbacks=[keras.callbacks.LambdaCallback(
                                      on_epoch_end=progress)])
        return {loss_name: [float(v) for v in history.history["loss"]]}

    def classifier(self) -> keras.Model:
        """A plain functional model of the trained parts: products in, probabilities out."""
        inputs = self.encoder.input  # the dict of named inputs
        logits = self._with_wide(self._with_rules(self.discriminator(self.encoder(inputs))),
                                 inputs)
        activations = {"exclusive": "softmax", "rule_based": "sigmoid"}
        outputs = {objective: keras.layers.Activation(activations[objective], name=objective,
                                                      dtype="float32")(logits[objective])
                   for objective in self.hparams.objectives}
        return keras.Model(inputs, outputs, name="prodcat_ssl_gan")


def build_ssl_gan(hparams: HParams, specs: list[ModelInput], classes: dict[str, int],
                  accelerator: Accelerator | None = None, rule_class_map=None) -> SSLGAN:
    """Build and compile; ``accelerator`` (precision, XLA) defaults to float32 without XLA;
    ``rule_class_map`` (``RuleClassMap``) enables the weak exclusive targets."""
    width = hparams.hidden_units[0]
    inputs, deep, sparse_inputs = input_towers(specs)
    wide = None
    if hparams.wide and sparse_inputs:
        wide = keras.Model(inputs, {objective: dense_layer(
            sparse_inputs, classes[objective], f"{objective}_wide")
            for objective in ("exclusive", "rule_based")}, name="wide")
    representation = dense_layer(deep, width, "representation")
    representation = keras.layers.LeakyReLU(negative_slope=0.2)(representation)
    encoder = keras.Model(inputs, representation, name="encoder")

    vector = keras.Input((width,), name="vector")
    x = keras.layers.GaussianNoise(hparams.input_noise, seed=hparams.seed)(vector)
    x = keras.layers.Dropout(hparams.dropout, seed=hparams.seed)(x)
    features = hidden_stack(x, hparams, prefix="discriminator")
    outputs = {"features": features,
               "exclusive": keras.layers.Dense(classes["exclusive"], name="exclusive_logits")(features)}
    # the rule-based head: applied by the SSLGAN itself (built here, in the order the weights
    # have always been drawn: a seed gives the same initial weights as before)
    rule_head = keras.layers.Dense(classes["rule_based"], name="rule_based_logits")
    rule_head.build((None, features.shape[-1]))
    if hparams.gan_head == "separate_unit":
        outputs["real_fake"] = keras.layers.Dense(1, name="real_fake_logit")(features)
    discriminator = keras.Model(vector, outputs, name="discriminator")

    noise = keras.Input((hparams.noise_dim,), name="noise")
    g = keras.layers.Dense(width, name="generator_hidden")(noise)
    g = keras.layers.LeakyReLU(negative_slope=0.2)(g)
    g = keras.layers.Dropout(hparams.dropout, seed=hparams.seed)(g)
    generator = keras.Model(noise, keras.layers.Dense(width, name="fake_vector")(g), name="generator")

    model = SSLGAN(encoder, discriminator, generator, rule_head, hparams, wide=wide,
                   rule_class_map=rule_class_map)
    wrap = accelerator.loss_scale_optimizer if accelerator else (lambda optimizer: optimizer)
    averaging = {"use_ema": True, "ema_momentum": hparams.weight_averaging} \
        if hparams.weight_averaging else {}
    d_optimizer = LazyAdam(hparams.learning_rate, weight_decay=hparams.weight_decay or None,
                           **averaging)
    if hparams.weight_decay:
        # the layers' kernels only: not their biases, nor the rules' confusion
        d_optimizer.exclude_from_weight_decay(var_names=["bias", "rule_confusion_logits"])
    model.compile(d_optimizer=wrap(d_optimizer),
                  g_optimizer=wrap(keras.optimizers.Adam(hparams.learning_rate)),
                  jit_compile=accelerator.jit_compile if accelerator else False,
                  steps_per_execution=accelerator.steps_per_execution if accelerator else 1)
    return model
