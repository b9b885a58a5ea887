"""Label-efficiency benchmark: macro-F1 as the share of labelled rows grows.

The protocol (``benchmarks/label_data.py``): the split keeps a product's listings
together (reviews: by ``Clothing ID``, with the pipeline's own hash split);
every method picks its hyperparameters, and the networks their epoch, by
macro-F1 on the validation split; the test split is scored once per method,
budget and seed, for the one table printed. Macro-F1 is scikit-learn's
(``trainer.metrics.macro_f1``), the trainer's own definition.

Methods: the tuned scikit-learn peers of ``benchmarks/peers.py`` (``logreg``,
``self_training``, ``label_spreading``, ``weak_supervision``, ``weak_self_training``) and prodcat's
networks of ``benchmarks/networks.py`` (``dnn``, ``ssl_gan``, ``ssl_gan_rules``
-- prodcat's default model --, and the GAN-less twins ``net_supervised``,
``net_rules``; ``ssl_gan_rules_x3``, three of the default model averaged, runs only when
named in ``--methods``, and so does ``blend``: the default model's class probabilities
averaged with ``weak_self_training``'s, the peer's weight chosen on validation).
Fashion-MNIST (``--dataset fashion_mnist``): no rules, so the methods that need them
are left out; 100 and 1,000 labels.

``--variants`` prints the other table: each variant of prodcat's model (options
of ``trainer/hparams.py``) against the default, scored on validation only.

``--at-inference`` prints a third table, validation only: what changing the class
probabilities after training does, for the default model and the best peer (the rules'
classes weighed in, post-hoc logit adjustment).

``--draws N`` runs the test table on N draws of the split by product (draw 0 the
pipeline's own): a test split of about a hundred products moves every method by points,
so the mean over several draws says more than any one of them.

``--validation-halves`` asks how much choosing on validation flatters each method,
without reading the test split: the validation products are split in two halves
(by product, hashed); each method makes its choices on one half and is scored on
that half and on the other, then the other way round (with ``--draws N``: on each
draw of the split, the figures averaged).

    .venvs/ml/bin/python -m benchmarks.label_efficiency [--seeds 3] [--dataset reviews]
        [--budgets 0.01,0.02] [--methods ...] [--draws 1] [--plot docs/label_efficiency_reviews.png]
    .venvs/ml/bin/python -m benchmarks.label_efficiency --variants [--budgets 0.01,0.02]
    .venvs/ml/bin/python -m benchmarks.label_efficiency --at-inference [--budgets 0.01,0.02]
    .venvs/ml/bin/python -m benchmarks.label_efficiency --validation-halves --seeds 2 \
        --budgets 0.01,0.02 --methods weak_supervision,ssl_gan_rules [--draws 3]
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import sys
import time
from importlib import metadata

import numpy as np

from benchmarks import label_data, networks, peers
from trainer.metrics import macro_f1
from trainer.peer import class_probabilities

# the default model and the best peer: the blend's parts, and the after-training table's models
NETWORK_AND_PEER = ("ssl_gan_rules", "weak_self_training")
# the default model's class probabilities averaged with the best peer's, the peer's weight
# chosen on validation among BLEND_WEIGHTS (0: the network alone, 1: the peer alone)
BLEND = "blend"
BLEND_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
RULE_METHODS = ("weak_supervision", "weak_self_training", "ssl_gan_rules", "net_rules",
                "ssl_gan_rules_x3", BLEND)
METHODS = (*peers.PEERS, *networks.NETWORKS, BLEND)
# what runs unless --methods says otherwise: not the experiments that cost several models'
# time (the ensemble of three networks, the blend of a network and a peer)
DEFAULT_METHODS = tuple(m for m in METHODS if not m.endswith(networks.ENSEMBLE) and m != BLEND)
BUDGETS = {"reviews": (0.01, 0.02, 0.05, 0.10, 1.0), "fashion_mnist": (100, 1000)}
# What was tried on prodcat's model (options of trainer/hparams.py), each against the
# defaults, on validation; the defaults in hparams.py are what this table chose.
VARIANTS = {
    "no weak targets (rule_to_exclusive_weight 0)": {"rule_to_exclusive_weight": 0.0},
    "weak targets taken as the truth (no confusion)": {"rule_confusion": False},
    "weak targets at half weight": {"rule_to_exclusive_weight": 0.5},
    "weak targets at double weight": {"rule_to_exclusive_weight": 2.0},
    "logit-adjusted exclusive loss": {"exclusive_loss": "logit_adjusted"},
    "class-balanced exclusive loss": {"exclusive_loss": "balanced"},
    "wide (linear) path": {"wide": True},
    "entropy minimisation 0.1": {"entropy_weight": 0.1},
    "encoder in the GAN (gan_encoder_gradient 1)": {"gan_encoder_gradient": 1.0},
    "encoder pretrained (denoising autoencoder, 3 epochs)": {"encoder_pretrain_epochs": 3},
    "encoder pretrained (contrastive, 3 epochs)": {"encoder_pretrain_epochs": 3,
                                                   "encoder_pretraining": "contrastive"},
    "encoder pretrained (contrastive, 10 epochs)": {"encoder_pretrain_epochs": 10,
                                                    "encoder_pretraining": "contrastive"},
    "labelled rows' weak targets move their logits": {"confusion_from_labels": False},
    "weight averaging (moving average, 0.99)": {"weight_averaging": 0.99},
    "labelled share of a batch 0.1": {"labelled_share": 0.1},
    "labelled share of a batch 0.5": {"labelled_share": 0.5},
    "consistency 1.0 (words dropped 0.3)": {"consistency_weight": 1.0},
    "consistency 3.0 (words dropped 0.3)": {"consistency_weight": 3.0},
    "consistency 1.0 (words dropped 0.5, sharpened 0.4, sure 0.3)": {
        "consistency_weight": 1.0, "consistency_drop": 0.5, "consistency_temperature": 0.4,
        "consistency_threshold": 0.3},
    "interpolation 1.0 (manifold mixup, alpha 0.5)": {"interpolation_weight": 1.0},
    "interpolation 1.0 (manifold mixup, alpha 1)": {"interpolation_weight": 1.0,
                                                    "interpolation_alpha": 1.0},
    "interpolation 3.0 (manifold mixup, alpha 0.5)": {"interpolation_weight": 3.0},
    "label smoothing 0.1": {"label_smoothing": 0.1},
    "label smoothing 0.2": {"label_smoothing": 0.2},
    "no self-training (self_training_per_class 0)": {"self_training_per_class": 0},
    "self-training: 25 pseudo-labels a class": {"self_training_per_class": 25},
    "self-training: 100 pseudo-labels a class": {"self_training_per_class": 100},
    "self-training: second network trains the first's best epochs": {
        "self_training_epochs": "first_network"},
    "self-training: pseudo-labels the rules agree with (or say nothing of)": {
        "self_training_rules": "agree"},
    "self-training: pseudo-labels the rules agree with, only": {
        "self_training_rules": "agree_only"},
    "self-training: pseudo-labels from the weak-supervision peer": {
        networks.TEACHER: "peer"},
    "self-training: pseudo-labels from the network and the peer": {
        networks.TEACHER: "network_and_peer"},
    # the GAN's own settings: what the real/fake term can add over its GAN-less twin
    "GAN: none (real_fake_weight 0, the twin net_rules)": {"real_fake_weight": 0.0},
    "GAN: real/fake weight 0.3": {"real_fake_weight": 0.3},
    "GAN: real/fake weight 3": {"real_fake_weight": 3.0},
    "GAN: p(real) from the class logits (Salimans et al.)": {"gan_head": "class_logits"},
    "GAN: no noise on the discriminator's inputs": {"input_noise": 0.0},
    "GAN: adversarial term beside feature matching": {"adversarial_weight": 1.0},
    "GAN: encoder gets a tenth of its gradient": {"gan_encoder_gradient": 0.1},
    # the network's own shape and pace, as a practitioner would tune them
    "shape: learning rate 0.003": {"learning_rate": 3e-3},
    "shape: learning rate 0.0003": {"learning_rate": 3e-4},
    "shape: dropout 0.5": {"dropout": 0.5},
    "shape: a hidden layer of 512": {"hidden_units": (512,)},
    "shape: two hidden layers (256, 128)": {"hidden_units": (256, 128)},
    "shape: weight decay 0.01": {"weight_decay": 0.01},
    "shape: weight decay 0.1": {"weight_decay": 0.1},
    "shape: weight decay 1": {"weight_decay": 1.0},
    # the changes each a little ahead of the defaults in their own tables, together
    "together: dropout 0.5, a tenth of a batch labelled": {"dropout": 0.5,
                                                           "labelled_share": 0.1},
    "together: dropout 0.5, a tenth labelled, contrastive encoder": {
        "dropout": 0.5, "labelled_share": 0.1, "encoder_pretrain_epochs": 3,
        "encoder_pretraining": "contrastive"},
    "together: dropout 0.5, a tenth labelled, the peer's pseudo-labels": {
        "dropout": 0.5, "labelled_share": 0.1, networks.TEACHER: "peer"},
}


def rules_weighed(strength: float):
    """The rules' classes weighed in at inference: each class the product's rule labels name
    (``Split.candidates``) has its probability multiplied by ``e**strength``; products the
    rules name nothing for keep theirs. The legacy rules label products at prediction time
    too, so a model may read them there as well as in training."""
    def adjust(probabilities, split, prior):
        named = split.candidates
        return np.where(named.sum(axis=1, keepdims=True) > 0,
                        probabilities * np.exp(strength * named), probabilities)
    return adjust


def logit_adjusted(tau: float):
    """Post-hoc logit adjustment (Menon et al. 2021): log p(class) - tau log prior(class),
    the prior the labelled rows' class frequencies (plus one): small classes pushed up."""
    return lambda probabilities, split, prior: np.log(probabilities + 1e-12) - tau * np.log(prior)


# What was tried after training on the class probabilities of the default model and of the
# best peer, scored on validation only (``--at-inference``)
AT_INFERENCE = {
    "as trained": lambda probabilities, split, prior: probabilities,
    **{f"rules' classes weighed in, e^{s:g}": rules_weighed(s) for s in (0.5, 1.0, 2.0)},
    **{f"logit adjustment, tau {t:g}": logit_adjusted(t) for t in (0.25, 0.5, 1.0)},
}


def run(method, data, labelled, seed, options):
    if method in peers.PEERS:
        return peers.run_peer(method, data, labelled, seed)
    if method == BLEND:
        return run_blend(data, labelled, seed, options)
    return networks.run_network(method, data, labelled, seed, options)


def network_and_peer_probabilities(data, labelled, seed, options, splits) -> dict:
    """``NETWORK_AND_PEER``, each trained once: ``{split: (network's, peer's)}`` class
    probabilities on each of ``splits``."""
    network = networks.run_probabilities(NETWORK_AND_PEER[0], data, labelled, seed, options)
    peer = peers.run_peer(NETWORK_AND_PEER[1], data, labelled, seed)
    return {split: (network[split], class_probabilities(
        peer["model"], getattr(data, split).x, len(data.classes))) for split in splits}


def run_blend(data, labelled, seed, options) -> dict:
    """The default network's class probabilities averaged with the weak-supervision peer's
    (a different kind of model, so their errors may differ); the peer's weight is chosen
    on validation, as every other choice."""
    answers = {split: [(w * peer + (1 - w) * network).argmax(axis=1) for w in BLEND_WEIGHTS]
               for split, (network, peer) in network_and_peer_probabilities(
                   data, labelled, seed, options, ("valid", "test")).items()}
    scores = [macro_f1(data.valid.y, predicted) for predicted in answers["valid"]]
    best = int(np.argmax(scores))
    return {"valid": answers["valid"][best], "test": answers["test"][best],
            "choice": {"peer_weight": BLEND_WEIGHTS[best]}}


def budget_name(budget: float, rows: int) -> str:
    return f"{budget:.0%}" if budget <= 1 else f"{int(budget)}"


def machine() -> str:
    """The CPU and the libraries a table was measured with. On one machine the networks'
    figures repeat to the decimal; another CPU can take other kernels, and a different order
    of floating-point sums moves a seed's score by tenths of a point."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo
                        if line.startswith("model name")), platform.machine())
    except OSError:
        cpu = platform.machine() or "unknown CPU"
    versions = []
    for name in ("tensorflow", "keras", "scikit-learn"):
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:  # e.g. TensorFlow installed as tensorflow-cpu
            versions.append(f"{name} (version unknown)")
    return f"machine: {cpu}, {os.cpu_count()} cores; {', '.join(versions)}"


def main_table(draws: list, budgets, methods, seeds, options) -> dict:
    """The test table: every method at every budget, on each draw of the split and seed (the
    figures: mean ± standard deviation over all of them)."""
    print(f"{'labelled':<10}{'method':<18}{'test macro-F1':>16}{'accuracy':>16}"
          f"{'valid F1':>10}{'seconds':>9}", flush=True)
    results: dict = {}
    for budget in budgets:
        for method in methods:
            test_f1, accuracy, valid_f1, started = [], [], [], time.monotonic()
            for data in draws:
                for seed in range(seeds):
                    labelled = label_data.labelled_rows(len(data.train), budget, seed)
                    out = run(method, data, labelled, seed, options)
                    valid_f1.append(100 * macro_f1(data.valid.y, out["valid"]))
                    test_f1.append(100 * macro_f1(data.test.y, out["test"]))
                    accuracy.append(100 * float(np.mean(out["test"] == data.test.y)))
            results.setdefault(method, {})[budget] = test_f1
            print(f"{budget_name(budget, 0):<10}{method:<18}"
                  f"{np.mean(test_f1):>9.1f} ± {np.std(test_f1):>4.1f}"
                  f"{np.mean(accuracy):>9.1f} ± {np.std(accuracy):>4.1f}"
                  f"{np.mean(valid_f1):>10.1f}"
                  f"{(time.monotonic() - started) / len(test_f1):>9.0f}", flush=True)
    return results


def variant_table(data, budgets, seeds, methods=("ssl_gan_rules",), only=()) -> None:
    """Each variant against the defaults: validation macro-F1 only (the test is not read);
    ``only``: the variants whose name contains one of these texts (and the defaults)."""
    chosen = {name: options for name, options in {"defaults": {}, **VARIANTS}.items()
              if name == "defaults" or not only or any(text in name for text in only)}
    width = max(map(len, chosen)) + 2
    print(f"validation macro-F1, mean over seeds 0..{seeds - 1}; budgets {list(budgets)}")
    print(f"{'variant':<{width}}" + "".join(f"{m + ' ' + budget_name(b, 0):>22}"
                                            for b in budgets for m in methods), flush=True)
    for name, options in chosen.items():
        cells, right = [], []
        for budget in budgets:
            for method in methods:
                scores, pseudo_right = [], []
                for seed in range(seeds):
                    labelled = label_data.labelled_rows(len(data.train), budget, seed)
                    out = networks.run_network(method, data, labelled, seed, options)
                    scores.append(100 * macro_f1(data.valid.y, out["valid"]))
                    if out.get("pseudo_right") is not None:
                        pseudo_right.append(100 * out["pseudo_right"])
                cells.append(f"{np.mean(scores):>22.1f}")
                right.append(f"{np.mean(pseudo_right):>21.0f}%" if pseudo_right else f"{'-':>22}")
        print(f"{name:<{width}}" + "".join(cells), flush=True)
        # how often self-training's pseudo-labels are right (the training rows' true classes)
        if any(cell.strip() != "-" for cell in right):
            print(f"{'  its pseudo-labels right':<{width}}" + "".join(right), flush=True)


def inference_table(data, budgets, seeds) -> None:
    """``AT_INFERENCE``'s changes to the class probabilities of the default model and the
    best peer, each trained once per budget and seed: validation macro-F1 (the test is not
    read), means over the seeds."""
    scores: dict = {}  # (adjustment, method, budget) -> [per seed]
    for budget in budgets:
        for seed in range(seeds):
            labelled = label_data.labelled_rows(len(data.train), budget, seed)
            counts = np.bincount(data.train.y[labelled], minlength=len(data.classes)) + 1.0
            prior = counts / counts.sum()
            both = network_and_peer_probabilities(data, labelled, seed, {}, ("valid",))
            for name, adjust in AT_INFERENCE.items():
                for method, p in zip(NETWORK_AND_PEER, both["valid"]):
                    predicted = np.asarray(adjust(p, data.valid, prior)).argmax(axis=1)
                    scores.setdefault((name, method, budget), []).append(
                        100 * macro_f1(data.valid.y, predicted))
    width = max(map(len, AT_INFERENCE)) + 2
    print(f"validation macro-F1, mean over seeds 0..{seeds - 1}; budgets {list(budgets)}")
    print(f"{'after training':<{width}}" + "".join(
        f"{m + ' ' + budget_name(b, 0):>24}" for b in budgets for m in NETWORK_AND_PEER))
    for name in AT_INFERENCE:
        print(f"{name:<{width}}" + "".join(
            f"{np.mean(scores[name, m, b]):>24.1f}" for b in budgets for m in NETWORK_AND_PEER),
            flush=True)


def validation_halves(draws: list, budgets, methods, seeds, options=None) -> None:
    """Each method chooses on one half of the validation products and is scored on the
    other, each half in turn, on every draw of the split (the figures: means over the draws
    and seeds; "both": over both halves); the test split is not read."""
    splits = []  # per draw: the two ways round, as data sets whose test is the other half
    for draw, data in enumerate(draws):
        half = np.array([int(hashlib.sha256(str(g).encode("utf-8")).hexdigest(), 16) % 2
                         for g in data.valid.groups])
        halves = [np.flatnonzero(half == h) for h in (0, 1)]
        for h, rows in enumerate(halves):
            print(f"{f'draw {draw}, ' if len(draws) > 1 else ''}half {'AB'[h]}: "
                  f"{len(rows):,} validation rows, {len(set(data.valid.groups[rows])):,} products")
        splits.append([dataclasses.replace(data, valid=data.valid.take(halves[chosen_on]),
                                           test=data.valid.take(halves[1 - chosen_on]))
                       for chosen_on in (0, 1)])
    print(f"{'labelled':<10}{'method':<18}{'chosen on':>10}{'on it':>8}{'on the other':>14}"
          f"{'difference':>12}", flush=True)
    for budget in budgets:
        for method in methods:
            scores = {}  # chosen on -> (own, held out)
            for chosen_on in (0, 1):
                own, held_out = [], []
                for ways in splits:
                    split = ways[chosen_on]
                    for seed in range(seeds):
                        labelled = label_data.labelled_rows(len(split.train), budget, seed)
                        out = run(method, split, labelled, seed, options or {})
                        own.append(100 * macro_f1(split.valid.y, out["valid"]))
                        held_out.append(100 * macro_f1(split.test.y, out["test"]))
                scores["AB"[chosen_on]] = (own, held_out)
            scores["both"] = tuple(scores["A"][i] + scores["B"][i] for i in (0, 1))
            for name, (own, held_out) in scores.items():
                print(f"{budget_name(budget, 0):<10}{method:<18}{name:>10}"
                      f"{np.mean(own):>8.1f}{np.mean(held_out):>14.1f}"
                      f"{np.mean(own) - np.mean(held_out):>+12.1f}", flush=True)


def plot(results: dict, budgets, dataset: str, rows: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    positions = np.arange(len(budgets))
    for method, by_budget in results.items():
        means = [np.mean(by_budget[b]) for b in budgets]
        stds = [np.std(by_budget[b]) for b in budgets]
        style = "-o" if method in ("ssl_gan_rules", "ssl_gan") else "--s" \
            if method in peers.PEERS else ":^"
        axis.errorbar(positions, means, yerr=stds, fmt=style, capsize=3, label=method)
    axis.set_xticks(positions, [budget_name(b, rows) for b in budgets])
    axis.set_xlabel("labelled training rows" + (" (share)" if budgets[0] <= 1 else ""))
    axis.set_ylabel("test macro-F1 (%)")
    axis.set_title(f"label efficiency on {dataset} (split by product, mean ± std over seeds)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"plot: {path}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=tuple(BUDGETS), default="reviews")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--draws", type=int, default=1,
                        help="draw the split by product this many times (draw 0: the "
                             "pipeline's own split; each other draw hashes the product with "
                             "its number) and run every seed on each")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--budgets", help="comma-separated shares (0.01) or counts (100) of "
                                          "labelled rows (default: all of the data set's)")
    parser.add_argument("--options", type=json.loads, default={},
                        help="options of prodcat's model to try, as JSON: "
                             "'{\"entropy_weight\": 0.3}'")
    parser.add_argument("--variants", action="store_true",
                        help="print the variant table (validation) instead of the test table")
    parser.add_argument("--only", action="append", default=[],
                        help="with --variants: the variants whose name contains this text "
                             "(repeatable)")
    parser.add_argument("--at-inference", action="store_true",
                        help="print the table of changes to the class probabilities after "
                             "training (validation) instead of the test table")
    parser.add_argument("--validation-halves", action="store_true",
                        help="choose on one half of the validation products, score on the "
                             "other (the test split is not read)")
    parser.add_argument("--plot", help="write the label-efficiency curve to this PNG")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown or args.seeds < 1:
        parser.error(f"unknown methods {sorted(unknown)} (choose from {METHODS}), or no seeds")
    budgets = tuple(float(b) for b in args.budgets.split(",")) if args.budgets \
        else BUDGETS[args.dataset]
    if args.draws < 1 or (args.draws > 1 and (args.variants or args.at_inference)):
        parser.error("--draws must be >= 1, and 1 with --variants or --at-inference")
    if args.at_inference and args.dataset != "reviews":
        parser.error("--at-inference needs the rules: --dataset reviews")
    draws = [label_data.load(args.dataset, draw) for draw in range(args.draws)]
    data = draws[0]
    print(machine(), flush=True)
    if not data.has_rules:
        methods = [m for m in methods if m not in RULE_METHODS]
    for draw, drawn in enumerate(draws):
        print(f"{drawn.name}: {len(drawn.train):,} training rows, {len(drawn.valid):,} "
              f"validation rows, {len(drawn.test):,} test rows (split by product"
              + (f", draw {draw}" if args.draws > 1 else "") + f"), {len(drawn.classes)} "
              f"classes, seeds 0..{args.seeds - 1}" + (f", options {json.dumps(args.options)}"
                                                      if args.options else ""), flush=True)
    if args.variants:
        variant_table(data, budgets, args.seeds, only=args.only)
        return
    if args.at_inference:
        inference_table(data, budgets, args.seeds)
        return
    if args.validation_halves:
        validation_halves(draws, budgets, methods, args.seeds, args.options)
        return
    results = main_table(draws, budgets, methods, args.seeds, args.options)
    if args.plot:
        plot(results, list(budgets), data.name, len(data.train), args.plot)


if __name__ == "__main__":
    main()
    # After dozens of models, TensorFlow's input-pipeline threads can keep the interpreter
    # from exiting (seen once, after the whole table had been printed): leave at once.
    sys.stdout.flush()
    os._exit(0)
