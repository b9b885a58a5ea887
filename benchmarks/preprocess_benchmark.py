"""Benchmark: the preprocessing job against a one-process scikit-learn featurisation.

Generates N products (the scale generator), then runs, each in its own process:
- prodcat's Beam + TF Transform job (its default local runner): clean, tokenise, top-k
  vocabularies, TF-IDF for title/description/raw category, categorical indices,
  log-scaled price, label encoding, TFRecords per objective/split;
- scikit-learn: the same featurisation with ``TfidfVectorizer`` (same vocabulary
  sizes), top-k label encoding of the categoricals, ``MultiLabelBinarizer`` and
  ``LabelEncoder`` for the labels, written to ``.npz``.
Prints products per second and peak memory (max RSS) of each, and their ratio.
Generated products carry no images, so the image feature is left out of the feature config
unless ``--image-feature`` keeps it (the job then still joins every product with its image,
as ``catalog_train`` does on such a catalogue; scikit-learn has nothing to do for it).
``--compare-rev REV`` also runs the Beam job of an earlier revision (a git worktree of it)
on the same products, in the same run.

    .venvs/ml/bin/python -m benchmarks.preprocess_benchmark --n 100000 [--compare-rev REV]
        [--image-feature]
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.checkout import is_revision, worktree
from catalog_data.generator import ScaleGenerator
from catalog_data.taxonomy import Taxonomy
from shared_config import features
from shared_config.paths import RunPaths

REPO = Path(__file__).resolve().parents[1]


def write_dump(paths: RunPaths, n: int, label=None) -> None:
    """N generated products as the dump stage writes them; ``label`` (products -> products,
    e.g. ``benchmarks.end_to_end.labelled``) gives some of them a human label first."""
    os.makedirs(paths.dump_dir, exist_ok=True)
    products = ScaleGenerator(Taxonomy.shopify(), seed=1).products(n)
    with gzip.open(paths.dump_dir + "part-00000.jsonl.gz", "wt", encoding="utf-8") as dump:
        for product in label(products) if label else products:
            product.pop("_true_category")
            dump.write(json.dumps(product, ensure_ascii=False) + "\n")


def config_without_images(directory: Path) -> Path:
    raw = yaml.safe_load(features.DEFAULT_PATH.read_text())
    raw["features"] = {k: v for k, v in raw["features"].items() if v["kind"] != "image"}
    path = directory / "features-no-image.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def measure(command: list[str], env: dict, cwd: Path = REPO) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process."""
    print(f"running {' '.join(command[1:4])} ...", flush=True)
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command} failed:\n{process.stderr.read()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--compare-rev", help="also run this revision's Beam job, first")
    parser.add_argument("--image-feature", action="store_true",
                        help="keep the feature config's image feature (no product has an image)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be positive")
    if args.compare_rev and not is_revision(args.compare_rev):
        parser.error(f"--compare-rev {args.compare_rev!r}: no such revision in {REPO}")
    with tempfile.TemporaryDirectory(prefix="prodcat-bench-") as tmp, \
            contextlib.ExitStack() as stack:
        paths = RunPaths.for_run("bench", tmp)
        print(f"generating {args.n:,} products ...", flush=True)
        write_dump(paths, args.n)
        config = features.DEFAULT_PATH if args.image_feature else config_without_images(Path(tmp))
        env = {**os.environ, "PRODCAT_PREFIX": tmp, "PRODCAT_FEATURE_CONFIG": str(config),
               "TF_CPP_MIN_LOG_LEVEL": "3"}
        job = [sys.executable, "-m", "beam_pipelines.preprocess", "--run-id", "bench",
               "--direct_running_mode=in_memory"]
        name = "beam + tf.transform, in-memory runner"
        results = {}
        if args.compare_rev:
            checkout = stack.enter_context(worktree(args.compare_rev))
            results[f"{name} ({args.compare_rev})"] = measure(
                job, {**env, "PYTHONPATH": str(checkout)}, cwd=checkout)
        results[name] = measure(job, {**env, "PYTHONPATH": str(REPO)})
        results["scikit-learn, one process"] = measure(
            [sys.executable, "-m", "benchmarks.sklearn_featurise", paths.dump_dir, tmp],
            {**env, "PYTHONPATH": str(REPO)})
    images = "the image feature kept, no product with an image" if args.image_feature \
        else "no image feature"
    print(f"\n{args.n:,} products on {os.cpu_count()} cores; {images}")
    print(f"{'pipeline':<52}{'seconds':>9}{'products/s':>12}{'peak MiB':>10}")
    for name, (seconds, peak) in results.items():
        print(f"{name:<52}{seconds:>9.1f}{args.n / seconds:>12,.0f}{peak:>10,.0f}")
    *beams, (sk_s, sk_mem) = results.values()
    for name, (beam_s, beam_mem) in zip(results, beams):
        print(f"{name} / scikit-learn: time {beam_s / sk_s:.2f}x, peak memory "
              f"{beam_mem / sk_mem:.2f}x")


if __name__ == "__main__":
    main()
