"""End to end at scale: N generated products from the store load to the last prediction in
the store, stage by stage, on services of its own (an osmem store, a RabbitMQ node and
the updater on free ports, a temporary prefix; removed after).

1. the scale generator makes N products over the real Shopify taxonomy (their legacy
   rule labels included) and a random 2% get their true level-2 category as a human
   label, as the labelling team would give them; they are bulk-loaded into the store;
2. ``catalog_train`` runs through Airflow (``airflow dags test``): dump, preprocess,
   the SSL-GAN and, beside it, the supervised baseline and the scikit-learn peer,
   evaluate, predict, publish;
3. the updater applies the predictions; the clock stops when the last product holds
   its prediction;
4. ``catalog_label_selection`` (active learning) runs on the trained run; timed on
   its own line, outside the total. (``catalog_similarity`` needs images, which
   generated products do not have.)

Per stage: wall time (Airflow's task start to end, so a task's start-up counts),
peak RSS of the stage's process (children included) and items per second. With
``--compare-rev REV`` the same script first runs the same N on a checkout of an
earlier revision (its own DAGs, stages and updater), and prints each stage's
time ratio; an older revision records no peak memory.

The store's own peak RSS is printed too. osmem keeps the whole index in memory and has been
seen to grow by hundreds of MiB a second once the updater starts writing (up to the
machine's memory, where the kernel kills it); the run is stopped, with that said, when the
store passes ``--store-memory-limit`` MiB (default 8,192), before the machine starts
swapping.

    make benchmark-end-to-end N=100000 [COMPARE=REV]
    (or, in the environment ``make`` sets up: .venvs/ml/bin/python -m benchmarks.end_to_end
     --products 100000 [--compare-rev REV] [--plot docs/end_to_end.png])
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import resource
import signal
import subprocess
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Self

from benchmarks.checkout import is_revision, worktree
from catalog_data.generator import ScaleGenerator
from catalog_data.rules import SEPARATOR
from catalog_data.taxonomy import Taxonomy
from local_stack.demo import Console, airflow_bin, run_dag
from local_stack.services import free_port
from local_stack.stack import REPO_ROOT, execution_api, running_stack
from shared_config import storage
from shared_config.paths import RunPaths
from shared_config.settings import Settings
from store.client import ProductStore
from store.load import load_products

LABELLED_SHARE, LABEL_LEVEL = 0.02, 2
# Airflow task -> (what it counts, where the count is in the stage's stats)
ITEMS = {"dump_products": ("products", "dump", "products"),
         "preprocess": ("products", "preprocess", "products"),
         "model.predict": ("products", "predict", "predictions"),
         "publish_predictions": ("predictions", "publish", "published")}


def labelled(products, seed: int = 0):
    """The generated products, 2% of them with their true level-2 category as a human label."""
    rng = random.Random(seed)
    for product in products:
        if rng.random() < LABELLED_SHARE:
            path = product["_true_category"].split(SEPARATOR)
            product["exclusive_label"] = SEPARATOR.join(path[:LABEL_LEVEL])
            product["label_source"] = "oracle"
        yield product


def applied(store: ProductStore, run_id: str) -> int | None:
    """How many products hold ``run_id``'s prediction; None when the store is too busy with
    the updater's bulk writes to answer in time (on osmem a request of 5,000 writes to a
    100,000-product index can hold a refresh past the client's 60 s)."""
    from opensearchpy.exceptions import ConnectionTimeout

    try:
        store.refresh()
        return store.count({"term": {"prediction_run_id": run_id}})
    except ConnectionTimeout:
        return None


class UpdateWatch(threading.Thread):
    """Counts the products holding ``run_id``'s prediction, once a second from the moment
    the predictions are published (``publish_stats`` exists) until every one is applied,
    and keeps the time (epoch seconds) that happened: with tasks side by side the updater
    writes while the DAG still runs. ``stop()`` ends it early."""

    def __init__(self, store: ProductStore, run_id: str, publish_stats: str,
                 interval: float = 1.0):
        super().__init__(daemon=True)
        self.store, self.run_id, self.publish_stats = store, run_id, publish_stats
        self.interval = interval
        self.published: int | None = None
        self.updated: int | None = None
        self.done_at: float | None = None
        self.error: Exception | None = None
        self._stopped = threading.Event()

    def run(self) -> None:
        try:
            self._watch()
        except Exception as err:  # noqa: BLE001 (handed to the caller, who raises it)
            self.error = err

    def _watch(self) -> None:
        while not self._stopped.is_set():
            if self.published is None and storage.exists(self.publish_stats):
                self.published = storage.read_json(self.publish_stats)["published"]
            if self.published is not None:
                self.updated = applied(self.store, self.run_id)
                if self.updated is not None and self.updated >= self.published:
                    self.done_at = time.time()
                    return
            self._stopped.wait(self.interval)

    def stop(self) -> None:
        self._stopped.set()


def rss_of(pid: int) -> float | None:
    """The peak RSS (MiB) of a running process."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


class StoreMemoryExceeded(RuntimeError):
    """The store grew past the benchmark's limit and was stopped."""


class MemoryWatch:
    """Samples a process's peak RSS (``rss_of``) every ``interval`` seconds in a thread of its
    own, and SIGKILL for it when it passes ``limit_mib`` (``exceeded`` then says at how much)."""

    def __init__(self, pid: int, limit_mib: float, interval: float = 1.0):
        self.pid, self.limit_mib, self.interval = pid, limit_mib, interval
        self.peak_mib: float = 0.0
        self.exceeded: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            peak = rss_of(self.pid)
            if peak is None:
                return
            self.peak_mib = peak
            if peak > self.limit_mib:
                self.exceeded = peak
                os.kill(self.pid, signal.SIGKILL)
                return

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def task_times(env: dict, dag_id: str, airflow_run_id: str) -> dict[str, tuple[float, float]]:
    """``(start, end)`` (epoch seconds) per task of one DAG run, from Airflow's own records."""
    out = subprocess.run([airflow_bin(), "tasks", "states-for-dag-run", dag_id, airflow_run_id,
                          "-o", "json"], env=env, capture_output=True, text=True, check=True)
    rows = json.loads(out.stdout[out.stdout.index("["):])
    return {row["task_id"]: (datetime.fromisoformat(row["start_date"]).timestamp(),
                             datetime.fromisoformat(row["end_date"]).timestamp())
            for row in rows if row.get("start_date") and row.get("end_date")}


def busy_seconds(intervals) -> float:
    """The length of the union of ``(start, end)`` intervals: the time some task ran."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def task_of(stage: str, args: list[str]) -> str | None:
    """The catalog_train task that ran a stage (the timing line's ``stage`` and ``args``)."""
    baseline = "baseline" in args or stage == "trainer.peer"
    return {"store.dump": "dump_products", "beam_pipelines.preprocess": "preprocess",
            "trainer.controller train": "model.train", "trainer.controller evaluate":
            "model.evaluate", "trainer.controller predict": "model.predict",
            "broker.publish": "publish_predictions"}.get(stage) if not baseline \
        else "train_and_evaluate_baseline"


def stage_usage(timings: Path) -> dict[str, dict[str, float]]:
    """Per task, from the stage runner's timing lines: ``peak_rss_mib`` (the largest stage
    the task ran) and ``cpu_seconds`` (its stages' CPU time, added up)."""
    usage: dict[str, dict[str, float]] = {}
    for line in timings.read_text().splitlines() if timings.exists() else []:
        row = json.loads(line)
        task = task_of(row["stage"], row["args"])
        if not task:
            continue
        figures = usage.setdefault(task, {})
        if row.get("peak_rss_mib") is not None:
            figures["peak_rss_mib"] = max(figures.get("peak_rss_mib", 0.0), row["peak_rss_mib"])
        if row.get("cpu_seconds") is not None:
            figures["cpu_seconds"] = figures.get("cpu_seconds", 0.0) + row["cpu_seconds"]
    return usage


def one_run(products: int, epochs: int, code_dir: Path, work: Path, label: str,
            name: str = "now", store_limit_mib: float = 8192, side_by_side: bool = True) -> dict:
    """Everything for one checkout; the figures per stage. ``side_by_side``: the DAG's
    tasks go to the LocalExecutor, which runs the independent ones (the model and the
    baseline task) at the same time; else one after another. Raises ``StoreMemoryExceeded``
    when the store passes ``store_limit_mib``."""
    store_port, amqp_port = free_port(), free_port()
    while amqp_port > 45000:  # the node's distribution port is the AMQP port + 20000
        amqp_port = free_port()
    settings = dataclasses.replace(
        Settings.from_env({}), prefix=str(work / "data"), store_url=f"http://127.0.0.1:{store_port}",
        amqp_url=f"amqp://guest:guest@127.0.0.1:{amqp_port}/%2F",
        updater_max_docs_per_second=1e9)
    timings = work / "stage_timings.jsonl"
    env = {**os.environ, **settings.as_env(), "PYTHONPATH": str(code_dir),
           "AIRFLOW__CORE__DAGS_FOLDER": str(code_dir / "dags"),
           "PRODCAT_STAGE_TIMINGS": str(timings), "PRODCAT_STAGE_LOG_DIR": str(work / "logs")}
    console = Console(False, work / "logs")
    run_id = f"e2e-{name}-{products}"
    paths = RunPaths.for_run(run_id, settings.prefix)
    figures: dict = {"label": label, "products": products, "stages": {},
                     "side_by_side": side_by_side}
    with running_stack(settings, work, f"prodcat-e2e-{amqp_port}", code_dir) as stack, \
            MemoryWatch(stack["store"].pid, store_limit_mib) as watch, \
            (execution_api(env, airflow_bin(), work / "logs" / "api-server.log") if side_by_side
             else contextlib.nullcontext(env)) as env:
        try:
            store = ProductStore.from_settings(settings)
            console.say(f"[{label}] loading {products:,} generated products ...")
            started, wall_start = time.monotonic(), time.time()
            generator = ScaleGenerator(Taxonomy.shopify(), seed=0).products(products)
            loaded = load_products(store, labelled(generator), recreate=True,
                                   ground_truth=str(work / "ground_truth.jsonl"))
            store.refresh()
            figures["stages"]["load"] = {"seconds": time.monotonic() - started, "started": 0.0,
                                         "items": loaded["loaded"], "unit": "products",
                                         "peak_rss_mib": round(resource.getrusage(
                                             resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
            dag_started = time.monotonic()
            updates = UpdateWatch(store, run_id, paths.stats_file("publish"))
            updates.start()
            try:
                run_dag(run_id, {"epochs": epochs}, env, console=console,
                        use_executor=side_by_side)
                figures["dag_seconds"] = time.monotonic() - dag_started
                dag_finished = time.time()
                while updates.is_alive():
                    console.progress(f"store: {updates.updated:,} of {updates.published:,} "
                                     "predictions applied" if updates.updated is not None
                                     else "store: busy writing, asking again")
                    updates.join(1)
            finally:
                updates.stop()
            if updates.error is not None:
                raise updates.error
            published, wall_finished = updates.published, updates.done_at
            # the run ends with the later of the DAG's end and the last prediction applied
            figures["total_seconds"] = max(dag_finished, wall_finished) - wall_start
            airflow_run = storage.read_json(paths.manifest)["airflow_run_id"]
            tasks = task_times(env, "catalog_train", airflow_run)
            usage = stage_usage(timings)
            for task, (start, end) in tasks.items():
                seconds = end - start
                unit, stats, key = ITEMS.get(task, ("", "", ""))
                items = storage.read_json(paths.stats_file(stats)).get(key) if stats else None
                if task == "model.train":
                    train = storage.read_json(paths.stats_file("train"))
                    # both networks' rows when the SSL-GAN self-trained
                    rounds = [train, train.get("self_training", {}).get("first_round")]
                    unit, items = "training rows", sum(
                        done["rows_per_epoch"] * done.get("early_stopping", {}).get(
                            "epochs_run", train["epochs"]) for done in rounds if done)
                    figures["train_rows_per_second"] = items / train["seconds"]
                figures["stages"][task] = {"seconds": seconds, "items": items, "unit": unit,
                                           "started": start - wall_start,
                                           **usage.get(task, {})}
            # from the predictions' publishing to the last one in the store: with tasks side
            # by side, the updater writes while the baseline task still runs
            published_at = tasks["publish_predictions"][1]
            figures["stages"]["updates after publish"] = {
                "seconds": wall_finished - published_at, "items": published, "unit": "documents",
                "started": published_at - wall_start, "peak_rss_mib": rss_of(stack["updater"].pid)}
            # the DAG's time that no task ran in (tasks side by side count once)
            figures["airflow_overhead_seconds"] = figures["dag_seconds"] - busy_seconds(
                tasks.values())
            selection_started = time.monotonic()
            run_dag("", {"batch_size": 100}, env, "catalog_label_selection", console,
                    use_executor=side_by_side)
            figures["selection_seconds"] = time.monotonic() - selection_started
        except Exception as err:
            if watch.exceeded is None:
                raise
            raise StoreMemoryExceeded(
                f"[{label}] the store (osmem, pid {watch.pid}) grew to {watch.exceeded:,.0f} MiB, "
                f"past the limit of {store_limit_mib:,.0f} MiB (--store-memory-limit), and was "
                f"stopped; the run ended with {type(err).__name__}") from err
        figures["store_peak_rss_mib"] = watch.peak_mib
    return figures


def table(figures: dict, before: dict | None = None) -> str:
    lines = [f"{figures['products']:,} products; {figures['label']}",
             f"{'stage':<30}{'seconds':>9}{'peak MiB':>10}{'cores':>7}{'items/s':>12}"
             + (f"{'before s':>10}{'ratio':>8}" if before else "")]
    for name, stage in figures["stages"].items():
        rate = stage["items"] / stage["seconds"] if stage.get("items") and stage["seconds"] else None
        peak, cpu = stage.get("peak_rss_mib"), stage.get("cpu_seconds")
        cores = cpu / stage["seconds"] if cpu is not None and stage["seconds"] else None
        row = (f"{name:<30}{stage['seconds']:>9.1f}"
               f"{(f'{peak:,.0f}' if peak else '-'):>10}"
               f"{(f'{cores:.2f}' if cores is not None else '-'):>7}"
               f"{(f'{rate:,.0f}' if rate else '-'):>12}")
        if before:
            old = before["stages"].get(name, {}).get("seconds")
            row += (f"{old:>10.1f}{old / stage['seconds']:>7.2f}x" if old else f"{'-':>10}")
        lines.append(row)
    lines.append(f"{'Airflow scheduling and start-up':<30}{figures['airflow_overhead_seconds']:>9.1f}")
    lines.append(f"catalog_train: {figures['dag_seconds']:,.0f} s, its tasks "
                 + ("side by side where the DAG allows" if figures.get("side_by_side", False)
                    else "one after another"))
    total = (f"total, store load to last document updated: {figures['total_seconds']:,.0f} s "
             f"({figures['total_seconds'] / 60:.1f} min)")
    if before:
        total += f"; before {before['total_seconds']:,.0f} s: {before['total_seconds'] / figures['total_seconds']:.2f}x faster"
    lines.append(total)
    lines.append(f"training: {figures.get('train_rows_per_second', 0):,.0f} rows/s; "
                 f"catalog_label_selection after it: {figures['selection_seconds']:,.0f} s; "
                 f"the store's peak: {figures.get('store_peak_rss_mib', 0):,.0f} MiB")
    return "\n".join(lines)


def timeline(run: dict) -> list[tuple[str, float, float]]:
    """``(stage, start, seconds)`` from the store load's start: each stage where it ran (side
    by side ones overlap; the updates from the predictions' publishing on); one after another
    (Airflow's time last) for figures without starts."""
    stages = run["stages"]
    if all("started" in stage for stage in stages.values()):
        return [(name, stage["started"], stage["seconds"]) for name, stage in stages.items()]
    spans, left = [], 0.0
    for name, stage in [*stages.items(), ("Airflow scheduling and start-up",
                                          {"seconds": run["airflow_overhead_seconds"]})]:
        spans.append((name, left, stage["seconds"]))
        left += stage["seconds"]
    return spans


def plot(runs: list[dict], target: str,
         xlabel: str = "seconds (store load to last document updated)") -> None:
    """Where the time goes: one row per run, each stage a bar from its start; a stage that
    ran beside an earlier one is drawn half height in the row's upper half."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spans = [timeline(run) for run in runs]
    names = list(dict.fromkeys(name for run in spans for name, _, _ in run))
    fig, ax = plt.subplots(figsize=(9, 1.6 + 0.9 * len(runs)))
    colours = plt.get_cmap("tab20").colors
    in_legend = set()
    for row, run in enumerate(spans):
        reach = 0.0
        for name, start, seconds in sorted(run, key=lambda span: span[1]):
            beside = start < reach - 0.5  # starts before the bars so far have ended
            ax.barh(row + (0.2 if beside else 0.0), seconds, left=start,
                    height=0.4 if beside else 0.8,
                    color=colours[names.index(name) % len(colours)]
                    if name != "Airflow scheduling and start-up" else "lightgrey",
                    label=None if name in in_legend else name)
            in_legend.add(name)
            reach = max(reach, start + seconds)
    ax.set_yticks(range(len(runs)), [f"{r['label']}\n{r['products']:,} products" for r in runs])
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # clear of the axis
    fig.savefig(target, dpi=120, bbox_inches="tight")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.end_to_end", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--compare-rev", help="also run this earlier git revision, first")
    parser.add_argument("--sequential", action="store_true",
                        help="run the DAG's tasks one after another (airflow dags test without "
                             "an executor) instead of side by side where the DAG allows")
    parser.add_argument("--compare-sequential", action="store_true",
                        help="first run with --sequential (this checkout, or --compare-rev's), "
                             "then side by side")
    parser.add_argument("--plot", help="save a stacked bar of where the time goes here (PNG)")
    parser.add_argument("--out", help="write the figures here (JSON)")
    parser.add_argument("--store-memory-limit", type=float, default=8192, metavar="MIB",
                        help="stop the run when the store's RSS passes this (default 8192)")
    args = parser.parse_args(argv)
    if args.products < 100:
        parser.error("--products must be at least 100")
    if args.store_memory_limit <= 0:
        parser.error("--store-memory-limit must be positive")
    if args.compare_rev and not is_revision(args.compare_rev):
        parser.error(f"--compare-rev {args.compare_rev!r}: no such revision")
    if args.compare_sequential and args.sequential:
        parser.error("--compare-sequential runs one of the two with --sequential: leave that out")
    try:
        runs = _runs(args)
    except StoreMemoryExceeded as err:
        raise SystemExit(f"stopped: {err}") from None
    if args.out:
        Path(args.out).write_text(json.dumps(runs, indent=1))
    if args.plot:
        plot(runs, args.plot)
        print(f"plot: {args.plot}")


def _runs(args) -> list[dict]:
    """Each run (the earlier revision's or the sequential one first, if asked); prints their
    tables."""
    runs = []
    side_by_side = not args.sequential
    with tempfile.TemporaryDirectory(prefix="prodcat-e2e-") as tmp:
        if args.compare_rev:
            with worktree(args.compare_rev) as old:
                (Path(tmp) / "before").mkdir()
                runs.append(one_run(args.products, args.epochs, old, Path(tmp) / "before",
                                    f"before ({args.compare_rev})", "before",
                                    args.store_memory_limit,
                                    side_by_side and not args.compare_sequential))
        elif args.compare_sequential:
            (Path(tmp) / "before").mkdir()
            runs.append(one_run(args.products, args.epochs, REPO_ROOT, Path(tmp) / "before",
                                "tasks one after another", "before", args.store_memory_limit,
                                side_by_side=False))
        if runs:
            print(table(runs[0]), flush=True)
        (Path(tmp) / "now").mkdir()
        runs.append(one_run(args.products, args.epochs, REPO_ROOT, Path(tmp) / "now",
                            "now" if not args.compare_sequential else "tasks side by side",
                            "now", args.store_memory_limit, side_by_side))
    print(table(runs[-1], runs[0] if len(runs) > 1 else None))
    return runs


if __name__ == "__main__":
    main()
