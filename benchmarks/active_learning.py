"""Active learning, simulated: how many labels each selection strategy needs.

    python -m benchmarks.active_learning [--dataset reviews|generated] [--seeds 0,1,2]
        [--rounds 10] [--seed-share 0.005] [--batch-share 0.005]
        [--strategies random,least_confidence,...,density:beta=2,density_diverse:weight=0.25]
        [--plot docs/active_learning_reviews.png [--plot-only random,margin,...]]
        [--save-curves curves.json] [--add-curves earlier-seeds.json ...]

From a random seed set (``--seed-share`` of the training split), each round fits
the model on the labelled rows, scores the unlabelled training rows with the
strategy (``active_learning/strategies.py``, the functions the pipeline uses),
and the oracle answers the batch it picks (``--batch-share`` of the training
split). Macro-F1 on the fixed test split is recorded every round; every choice of
the model (its ``C``) is made on the validation split. The split is the
pipeline's (by product group), and only the training split is ever selected from.

The model in the loop is the fast path: the class-balanced logistic regression of
the peers (``trainer/peer.py``) on the benchmark's TF-IDF features, ``C`` searched
on validation each round. The committee is five bootstrap replicas of it; density
is the mean cosine similarity to the 10 nearest pool products in a 64-dimension SVD
of the features, the same space as the diverse batches'.

A strategy may carry settings, each after a colon
(``density_diverse:beta=2:weight=0.25``), tuned like any other choice on
validation: ``beta`` (the density term's exponent, ``density`` only; default 1)
and ``weight`` (how much a diverse batch values spread over score; default the
pipeline's, ``strategies.DIVERSITY_WEIGHT``).

Prints one table per data set: macro-F1 per round (mean ± std over seeds), and
**labels-to-target**: the labels each strategy needs to reach the macro-F1 random
reaches with its final budget (linear interpolation between rounds; "—" if never),
and that count as a share of random's budget.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import time
import warnings

import numpy as np

from active_learning import strategies
from trainer.metrics import macro_f1
from trainer.peer import balanced_logreg, class_probabilities

C_GRID = (1.0, 10.0, 100.0)
COMMITTEE = 5
NEIGHBOURS = 10
EMBEDDING_DIM = 64
CANDIDATES_PER_PICK = 10  # a diverse batch is chosen among the batch's 10x best candidates
BASE = ("random", "least_confidence", "margin", "entropy", "committee", "density")
SETTINGS = {"beta": 1.0, "weight": strategies.DIVERSITY_WEIGHT}


def parse_strategy(spec: str) -> tuple[str, bool, dict]:
    """``"density_diverse:beta=2:weight=0.25"`` -> ``("density", True, {"beta": 2.0,
    "weight": 0.25})``; every setting not named takes its default."""
    name, *given = spec.split(":")
    base = name.removesuffix("_diverse")
    settings = dict(SETTINGS)
    for item in given:
        key, _, value = item.partition("=")
        if key not in SETTINGS:
            raise ValueError(f"{spec}: unknown setting {key!r} (known: {sorted(SETTINGS)})")
        try:
            settings[key] = float(value)
        except ValueError:
            raise ValueError(f"{spec}: {key} must be a number, not {value!r}") from None
    if base not in BASE:
        raise ValueError(f"{spec}: unknown strategy {base!r} (known: {', '.join(BASE)})")
    if settings["beta"] != SETTINGS["beta"] and base != "density":
        raise ValueError(f"{spec}: beta applies to density only")
    if settings["weight"] != SETTINGS["weight"] and not name.endswith("_diverse"):
        raise ValueError(f"{spec}: weight applies to a diverse batch only")
    if not 0 <= settings["weight"] <= 1:
        raise ValueError(f"{spec}: weight must be within [0, 1]")
    return base, name.endswith("_diverse"), settings


def generated(n: int = 20_000, seed: int = 11):
    """The generated catalogue as a benchmark data set (each product its own group)."""
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer

    from benchmarks.label_data import DataSet, Split
    from shared_config.splits import split_for
    from store import demo_catalog

    products = list(demo_catalog.generate(n, seed=seed))
    texts = [" ".join(str(p[f]) for f in ("title", "description", "raw_category", "brand"))
             for p in products]
    truth = [p["_true_category"] for p in products]
    classes = sorted(set(truth))
    y = np.array([classes.index(t) for t in truth])
    groups = np.array([p["id"] for p in products])
    splits = np.array([split_for(g) for g in groups])
    vectoriser = TfidfVectorizer(max_features=2000, sublinear_tf=True).fit(
        [t for t, s in zip(texts, splits) if s == "train"])
    x = sparse.csr_matrix(vectoriser.transform(texts), dtype="float32")

    def part(name):
        rows = np.flatnonzero(splits == name)
        return Split(x[rows], y[rows], groups[rows])

    return DataSet("generated", part("train"), part("valid"), part("test"), classes, [])


def load(name: str):
    if name == "generated":
        return generated()
    from benchmarks.label_data import reviews

    return reviews()


def fit(data, rows: np.ndarray, seed: int):
    """The balanced logistic regression on ``rows``, ``C`` best on validation; with its
    validation macro-F1."""
    best = None
    for c in C_GRID:
        model = balanced_logreg(c, seed).fit(data.train.x[rows], data.train.y[rows])
        score = macro_f1(data.valid.y, model.predict(data.valid.x))
        if best is None or score > best[0]:
            best = (score, c, model)
    return best[2], best[1], best[0]


def pool_geometry(data, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised SVD embeddings of the training pool and each row's kNN density."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.neighbors import NearestNeighbors

    embedded = TruncatedSVD(EMBEDDING_DIM, random_state=seed).fit_transform(data.train.x)
    embedded /= np.linalg.norm(embedded, axis=1, keepdims=True) + 1e-12
    distances, _ = NearestNeighbors(n_neighbors=NEIGHBOURS + 1, metric="cosine").fit(
        embedded).kneighbors(embedded)
    density = 1 - distances[:, 1:].mean(axis=1)  # mean cosine similarity, self left out
    return embedded, density


def scores_for(strategy: str, model, c: float, data, labelled, pool, seed, geometry,
               round_: int) -> np.ndarray:
    base, _, settings = parse_strategy(strategy)
    classes = len(data.classes)
    if base == "random":
        return strategies.random_scores(pool, seed * 1000 + round_)
    if base == "committee":
        rng = np.random.default_rng(seed * 1000 + round_)
        rows = np.flatnonzero(labelled)
        members = []
        for _ in range(COMMITTEE):
            sample = rng.choice(rows, len(rows), replace=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                member = balanced_logreg(c, seed).fit(data.train.x[sample], data.train.y[sample])
            members.append(class_probabilities(member, data.train.x[pool], classes))
        return strategies.committee(members)
    p = class_probabilities(model, data.train.x[pool], classes)
    if base == "density":
        return strategies.information_density(strategies.margin(p), geometry[1][pool],
                                               beta=settings["beta"])
    return getattr(strategies, base)(p)


def simulate(data, strategy: str, seed: int, rounds: int, seed_share: float,
             batch_share: float, geometry) -> list[tuple[int, float, float]]:
    """``[(labels, test macro-F1, validation macro-F1)]`` after each round (seed set first)."""
    n = len(data.train)
    batch = max(1, round(batch_share * n))
    labelled = np.zeros(n, bool)
    labelled[np.random.default_rng(seed).choice(n, max(2, round(seed_share * n)),
                                                replace=False)] = True
    curve = []
    for round_ in range(rounds + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, c, valid = fit(data, labelled, seed)
        curve.append((int(labelled.sum()), macro_f1(data.test.y, model.predict(data.test.x)),
                      valid))
        if round_ == rounds:
            break
        pool = np.flatnonzero(~labelled)
        scores = scores_for(strategy, model, c, data, labelled, pool, seed, geometry, round_)
        _, diverse, settings = parse_strategy(strategy)
        if diverse:
            top = np.argsort(-scores, kind="stable")[:batch * CANDIDATES_PER_PICK]
            chosen = pool[top[strategies.diverse_batch(
                scores[top], geometry[0][pool[top]], data.train.groups[pool[top]], batch,
                weight=settings["weight"])]]
        else:
            chosen = pool[np.argsort(-scores, kind="stable")[:batch]]
        labelled[chosen] = True
    return curve


def labels_to_reach(curve: list[tuple[int, float]], target: float) -> float | None:
    """The labels at which a (mean) learning curve first reaches ``target``, interpolated."""
    for (n0, f0), (n1, f1) in itertools.pairwise(curve):
        if f0 >= target:
            return float(n0)
        if f1 >= target:
            return n0 + (n1 - n0) * (target - f0) / (f1 - f0)
    return float(curve[0][0]) if curve and curve[0][1] >= target else None


def _mean_curves(results: dict, column: int) -> dict:
    return {s: [float(np.mean([c[r][column] for c in curves])) for r in range(len(curves[0]))]
            for s, curves in results.items()}


def validation_reach(results: dict) -> dict:
    """Per strategy, the labels its mean validation curve needs to reach random's final
    validation macro-F1 (None: never)."""
    labels = [row[0] for row in next(iter(results.values()))[0]]
    valid = _mean_curves(results, 2)
    return {s: labels_to_reach(list(zip(labels, valid[s])), valid["random"][-1])
            for s in results}


def best_on_validation(results: dict) -> str:
    """The strategy that reaches random's final validation macro-F1 with the fewest labels
    (the choice is made on validation; the table reports test)."""
    reached = {s: n for s, n in validation_reach(results).items()
               if n is not None and s != "random"}
    return min(reached, key=reached.get) if reached else "random"


def table(data_name: str, results: dict) -> None:
    first = next(iter(results.values()))
    labels = [row[0] for row in first[0]]
    mean = _mean_curves(results, 1)
    std = {s: [float(np.std([c[r][1] for c in curves])) for r in range(len(labels))]
           for s, curves in results.items()}
    target = mean["random"][-1]
    print(f"\n{data_name}: test macro-F1 (%) by labels, mean ± std over "
          f"{len(first)} seeds; target = random's final {100 * target:.1f}")
    shown = list(range(0, len(labels), max(1, len(labels) // 5))) + [len(labels) - 1]
    shown = sorted(set(shown))
    print("| strategy | " + " | ".join(str(labels[r]) for r in shown)
          + " | labels to target | share of random's | validation: labels to target |")
    print("|---" * (len(shown) + 4) + "|")
    on_validation = validation_reach(results)
    for strategy in results:
        reach = labels_to_reach(list(zip(labels, mean[strategy])), target)
        cells = " | ".join(f"{100 * mean[strategy][r]:.1f} ± {100 * std[strategy][r]:.1f}"
                           for r in shown)
        needed = "—" if reach is None else f"{reach:.0f}"
        share = "—" if reach is None else f"{reach / labels[-1]:.2f}"
        chosen_by = "—" if on_validation[strategy] is None else f"{on_validation[strategy]:.0f}"
        print(f"| {strategy} | {cells} | {needed} | {share} | {chosen_by} |", flush=True)
    best = best_on_validation(results)
    reach = labels_to_reach(list(zip(labels, mean[best])), target)
    print(f"best strategy on validation: {best}; on test it needs "
          + ("more labels than random's budget" if reach is None else
             f"{reach:.0f} labels = {reach / labels[-1]:.2f} of random's {labels[-1]}"),
          flush=True)


def plot(data_name: str, results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    for strategy, curves in results.items():
        labels = [row[0] for row in curves[0]]
        values = np.array([[row[1] for row in c] for c in curves]) * 100
        axis.errorbar(labels, values.mean(axis=0), yerr=values.std(axis=0), label=strategy,
                      capsize=2, marker="o", markersize=3)
    axis.set_xlabel("labelled training products")
    axis.set_ylabel("test macro-F1 (%)")
    axis.set_title(f"Active learning on {data_name} (mean ± std over seeds)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"plot: {path}", flush=True)


def pool_curves(results: dict, path: str, dataset: str) -> dict:
    """This run's curves and those saved in ``path`` (the same data set, strategies and
    rounds, other seeds) as one set of results."""
    with open(path, encoding="utf-8") as source:
        saved = json.load(source)
    curves = saved.get("curves", {})
    if saved.get("dataset") != dataset or set(curves) != set(results):
        raise SystemExit(f"{path}: curves of {saved.get('dataset')!r} for {sorted(curves)}; "
                         f"this run has {dataset!r} for {sorted(results)}")
    rounds = {len(c) for runs in (*curves.values(), *results.values()) for c in runs}
    if len(rounds) != 1:
        raise SystemExit(f"{path}: curves of another number of rounds")
    return {s: results[s] + [[tuple(row) for row in c] for c in curves[s]] for s in results}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.active_learning",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("reviews", "generated"), default="reviews")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed-share", type=float, default=0.005)
    parser.add_argument("--batch-share", type=float, default=0.005)
    parser.add_argument("--strategies",
                        default=",".join(BASE + ("margin_diverse", "density_diverse")))
    parser.add_argument("--plot", help="write the learning curves to this PNG")
    parser.add_argument("--plot-only", metavar="STRATEGIES",
                        help="the strategies the plot shows (default: every one run)")
    parser.add_argument("--save-curves", metavar="JSON",
                        help="write every strategy's per-seed curves to this file")
    parser.add_argument("--add-curves", metavar="JSON", action="append", default=[],
                        help="curves saved by an earlier run with other seeds (same data set, "
                             "rounds and shares) to pool with this run's; repeatable")
    args = parser.parse_args(argv)
    chosen = args.strategies.split(",")
    for spec in chosen:
        try:
            parse_strategy(spec)
        except ValueError as error:
            parser.error(str(error))
    if "random" not in chosen:
        parser.error("random is needed as the reference")
    plotted = args.plot_only.split(",") if args.plot_only else chosen
    if set(plotted) - set(chosen):
        parser.error(f"--plot-only names strategies not run: {sorted(set(plotted) - set(chosen))}")
    seeds = [int(s) for s in args.seeds.split(",")]
    data = load(args.dataset)
    print(f"{data.name}: {len(data.train)} train / {len(data.valid)} valid / "
          f"{len(data.test)} test rows, {len(data.classes)} classes", flush=True)
    geometries = {seed: pool_geometry(data, seed) for seed in seeds}
    results = {}
    for strategy in chosen:
        results[strategy] = []
        for seed in seeds:
            started = time.monotonic()
            geometry = geometries[seed]
            curve = simulate(data, strategy, seed, args.rounds, args.seed_share,
                             args.batch_share, geometry)
            results[strategy].append(curve)
            print(f"{strategy} seed {seed}: " + ", ".join(f"{n}:{100 * f:.1f}"
                                                          for n, f, _ in curve)
                  + f" ({time.monotonic() - started:.0f} s)", flush=True)
    if args.save_curves:
        with open(args.save_curves, "w", encoding="utf-8") as out:
            json.dump({"dataset": data.name, "seeds": seeds, "curves": results}, out)
    for path in args.add_curves:
        results = pool_curves(results, path, data.name)
    table(data.name, results)
    if args.plot:
        plot(data.name, {s: results[s] for s in plotted}, args.plot)
    os._exit(0)  # TensorFlow's and BLAS's threads can hold the interpreter at exit


if __name__ == "__main__":
    main()
