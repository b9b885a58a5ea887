"""Benchmark: training throughput on a generated catalogue, this revision against an earlier one.

Generates N products (the scale generator over the real Shopify taxonomy, 2% of them with a
human label, as ``benchmarks.end_to_end`` loads them), runs the preprocessing job once, then
trains each model type for ``--epochs`` epochs (early stopping off, so both revisions run
the same epochs) with ``python -m trainer.controller train`` — this revision's, and with
``--compare-rev REV`` an earlier revision's on the same TFRecords, in the same run; with
``--repeats N`` each N times, the revisions taking turns (this machine's run-to-run spread is
larger than many changes: the medians are printed); with ``--compare-env KEY=VALUE,...`` this
revision also runs under those environment variables (TensorFlow's thread pools, say:
``TF_NUM_INTEROP_THREADS=1``), as one more contender. Prints per model type and revision: the
trainer's own seconds (from building the model to the last epoch's validation scoring,
without process start-up), training rows per second over those seconds, the steady rate of
the epochs after the first (the trainer's ``rows_per_second``: its steps only; "-" from a
revision that does not report it), peak RSS and the best validation score; then the ratios.
It times one network: the SSL-GAN's self-training (a second network) is turned off. The
preprocessing job's seconds and peak RSS are printed first.

    .venvs/ml/bin/python -m benchmarks.train_benchmark --n 100000 [--epochs 3]
        [--model-types ssl_gan,dnn] [--compare-rev REV] [--compare-env KEY=VALUE,...]
        [--repeats N]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.checkout import is_revision, worktree
from benchmarks.end_to_end import labelled
from benchmarks.preprocess_benchmark import config_without_images, write_dump
from shared_config.cli import RESULT_MARKER
from shared_config.paths import RunPaths

REPO = Path(__file__).resolve().parents[1]
RUN_ID = "bench"


def result_of(command: list[str], env: dict, cwd: Path) -> dict:
    """Run a stage's command; its ``PRODCAT_RESULT`` line, parsed."""
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[2:5])} failed:\n{done.stderr[-3000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    return json.loads(lines[-1][len(RESULT_MARKER):])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--model-types", default="ssl_gan,dnn")
    parser.add_argument("--compare-rev", help="also train with this revision's trainer, first")
    parser.add_argument("--compare-env", type=environment, default={},
                        help="also train this revision with these environment variables: "
                             "KEY=VALUE[,KEY=VALUE]")
    parser.add_argument("--repeats", type=int, default=1,
                        help="train each revision this many times, taking turns (medians)")
    args = parser.parse_args(argv)
    model_types = [m for m in args.model_types.split(",") if m]
    if args.n < 100 or args.epochs < 1 or args.repeats < 1 or not model_types:
        parser.error("--n must be at least 100, --epochs and --repeats positive, "
                     "--model-types not empty")
    if args.compare_rev and not is_revision(args.compare_rev):
        parser.error(f"--compare-rev {args.compare_rev!r}: no such revision in {REPO}")
    # (name, code, extra environment variables) of each contender
    revisions: list[tuple[str, Path, dict]] = []
    with tempfile.TemporaryDirectory(prefix="prodcat-bench-") as tmp, \
            contextlib.ExitStack() as stack:
        paths = RunPaths.for_run(RUN_ID, tmp)
        print(f"generating {args.n:,} products ...", flush=True)
        write_dump(paths, args.n, labelled)
        env = {**os.environ, "PRODCAT_PREFIX": tmp, "TF_CPP_MIN_LOG_LEVEL": "3",
               "PRODCAT_FEATURE_CONFIG": str(config_without_images(Path(tmp))),
               "PYTHONPATH": str(REPO)}
        print("preprocessing ...", flush=True)
        started = time.monotonic()
        preprocessed = result_of([sys.executable, "-m", "beam_pipelines.preprocess", "--run-id",
                                  RUN_ID, "--direct_running_mode=in_memory"], env, REPO)
        counts = preprocessed["examples"]
        print(f"preprocessed in {time.monotonic() - started:.1f} s, peak "
              f"{preprocessed.get('peak_rss_mib', float('nan')):,.0f} MiB", flush=True)
        if args.compare_rev:
            revisions.append((args.compare_rev, stack.enter_context(worktree(args.compare_rev)),
                              {}))
        revisions.append(("this revision", REPO, {}))
        if args.compare_env:
            revisions.append((",".join(f"{k}={v}" for k, v in args.compare_env.items()), REPO,
                              args.compare_env))
        results: dict[tuple[str, str], list[dict]] = {}
        for model_type in model_types:
            for repeat in range(args.repeats):
                # the revisions take turns, the first one alternating, so that neither
                # always runs first
                for name, code, extra in revisions if repeat % 2 == 0 else revisions[::-1]:
                    print(f"training {model_type} ({name}, {repeat + 1} of {args.repeats}) ...",
                          flush=True)
                    results.setdefault((model_type, name), []).append(
                        train_once(paths, {**env, **extra}, model_type, args.epochs, name,
                                   code))
    report(args, counts, model_types, results)


def environment(text: str) -> dict:
    """``KEY=VALUE[,KEY=VALUE]`` -> a dict (``--compare-env``)."""
    pairs = [part.partition("=") for part in text.split(",") if part]
    if not pairs or any(not key.isidentifier() or not sep for key, sep, _ in pairs):
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE[,KEY=VALUE]")
    return {key: value for key, _, value in pairs}


def train_once(paths: RunPaths, env: dict, model_type: str, epochs: int, name: str,
               code: Path) -> dict:
    """One ``trainer.controller train`` from scratch with ``code``'s trainer; its result."""
    # each run from scratch: with the same hyperparameters a later one would otherwise go
    # on from an earlier one's checkpoint
    shutil.rmtree(Path(paths.checkpoints("none")).parent, ignore_errors=True)
    # one network's training: self-training's second network off where a revision has it
    one_network = ["--self-training-per-class", "0"] if "self_training_per_class" in (
        code / "trainer" / "hparams.py").read_text() else []
    result = result_of(
        [sys.executable, "-m", "trainer.controller", "train", "--run-id", RUN_ID,
         "--model-type", model_type, "--epochs", str(epochs),
         "--early-stopping-patience", str(epochs + 1), *one_network],
        {**env, "PYTHONPATH": str(code)}, code)
    if result["resumed_at_epoch"]:
        raise RuntimeError(f"{model_type} ({name}) resumed at epoch "
                           f"{result['resumed_at_epoch']}: not a measurement")
    return result


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def report(args, counts: dict, model_types: list[str], results: dict) -> None:
    print(f"\n{args.n:,} products on {os.cpu_count()} cores: {counts['catalog_train']:,} training "
          f"products ({counts['exclusive_train']:,} with a human label, "
          f"{counts['rule_based_train']:,} with rule labels), {args.epochs} epochs")
    runs = f", median of {args.repeats} runs each" if args.repeats > 1 else ""
    width = max(16, *(len(name) + 2 for _, name in results))
    print(f"{'model':<10}{'revision':<{width}}{'seconds':>9}{'rows/s':>9}{'steady':>9}"
          f"{'peak MiB':>10}{'valid score':>13}{runs}")
    for (model_type, name), runs_of in results.items():
        seconds = median([r["seconds"] for r in runs_of])
        rows = runs_of[0]["rows_per_epoch"] * args.epochs
        rates = [r["rows_per_second"] for r in runs_of if r.get("rows_per_second")]
        steady = f"{median(rates):>9,.0f}" if rates else f"{'-':>9}"
        scores = [r.get("early_stopping", {}).get("best_valid_macro_f1", float("nan"))
                  for r in runs_of]
        print(f"{model_type:<10}{name:<{width}}{seconds:>9.1f}{rows / seconds:>9,.0f}{steady}"
              f"{median([r.get('peak_rss_mib', 0) for r in runs_of]):>10,.0f}"
              f"{median(scores):>13.3f}")
        if len(runs_of) > 1:
            each = " ".join(f"{r['seconds']:.1f}" for r in runs_of)
            print(f"{'':<{10 + width}}each run: {each} s")
    others = sorted({name for _, name in results} - {"this revision"})
    for model_type in model_types:
        after = median([r["seconds"] for r in results[model_type, "this revision"]])
        for other in others:
            before = median([r["seconds"] for r in results[model_type, other]])
            print(f"{model_type}: this revision {before / after:.2f}x faster than {other} "
                  f"(median seconds)")


if __name__ == "__main__":
    main()
