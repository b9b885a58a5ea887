"""``make demo``: one real catalogue run, end to end, on the local stack.

Starts the store, a RabbitMQ node and the updater, loads the demo catalogue
(built from real public data; the labelling oracle reveals a few exact labels),
runs the ``catalog_train`` DAG once through Airflow (``airflow dags test``),
runs ``catalog_label_selection`` and ``catalog_similarity`` after it, waits until the
updater has written the predictions and the visual neighbours into the store, prints a
summary of every stage with a sample product's neighbours, and ends by serving
the labelling UI (``local_stack/ui.py``) with the queue active learning filled.
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

from catalog_data import oracle, reviews_catalog
from local_stack.stack import REPO_ROOT, STATE_DIR, running_stack
from local_stack.ui import running_ui, serve
from shared_config import storage
from shared_config.cli import PROGRESS_MARKER, STAGE_MARKER, setup_logging
from shared_config.paths import RunPaths, validate_id
from shared_config.settings import Settings
from store import demo_catalog
from store.client import ProductStore
from store.load import load_products, read_jsonl
from store.run_stats import runs_store

log = logging.getLogger("prodcat.demo")


def airflow_bin() -> str:
    return os.environ.get("PRODCAT_AIRFLOW_BIN") or str(REPO_ROOT / ".venvs" / "airflow" / "bin" / "airflow")


# what Airflow's task log adds after a message: " [logger] loc=file.py:12"
_AIRFLOW_SUFFIX = re.compile(r"\s+\[[\w.]+\]\s+loc=\S+\s*$")


QUIET_PROGRESS_SECONDS = 15.0  # not a terminal: progress lines no more often than this


class Console:
    """What the demo shows: quiet by default (each stage's progress on one line, its result
    on one line; everything else in a log file whose path is printed), or all of it."""

    def __init__(self, verbose: bool, log_dir: Path, stream=None):
        self.verbose, self.log_dir = verbose, log_dir
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self._progress_shown = False
        self._last_progress = -QUIET_PROGRESS_SECONDS

    def say(self, text: str) -> None:
        self._end_progress()
        print(text, file=self.stream, flush=True)

    def progress(self, text: str) -> None:
        """One line that a TTY rewrites in place; elsewhere, a line at most every
        ``QUIET_PROGRESS_SECONDS``."""
        if self.live:
            self.stream.write("\r\033[K  " + text)
            self.stream.flush()
            self._progress_shown = True
        elif time.monotonic() - self._last_progress >= QUIET_PROGRESS_SECONDS:
            self._last_progress = time.monotonic()
            print("  " + text, file=self.stream, flush=True)

    def _end_progress(self) -> None:
        if self._progress_shown:
            self.stream.write("\n")
            self._progress_shown = False

    def show(self, line: str) -> None:
        """A line of a DAG's output: a stage's result or progress, or (verbose) anything."""
        if self.verbose:
            print(line, file=self.stream, flush=True)
        elif STAGE_MARKER in line:
            self.say("  " + _AIRFLOW_SUFFIX.sub("", line.split(STAGE_MARKER, 1)[1]))
        elif PROGRESS_MARKER in line:
            self.progress(_AIRFLOW_SUFFIX.sub("", line.split(PROGRESS_MARKER, 1)[1]))


def run_dag(run_id: str, conf: dict, env: dict, dag_id: str = "catalog_train",
            console: Console | None = None, use_executor: bool = False) -> None:
    """``airflow dags test`` the DAG; its whole output goes to a log file, the console shows
    each stage's progress and result. With ``use_executor`` the tasks go to the executor
    that ``env`` names (``local_stack.stack.execution_api``), which runs independent tasks
    side by side; their output then goes to Airflow's task logs, and the console shows each
    stage's result from the stage runner's timing lines (``PRODCAT_STAGE_TIMINGS``)."""
    console = console or Console(True, STATE_DIR / "logs" / "demo")
    command = [airflow_bin(), "dags", "test", dag_id, "--conf", json.dumps(
        {"run_id": run_id, **conf} if run_id else conf)] + (["--use-executor"] if use_executor
                                                           else [])
    console.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = console.log_dir / f"{dag_id}-{dt.datetime.now():%Y%m%dT%H%M%S}.log"
    console.say(f"{dag_id}  (full log: {log_path})")
    log.info("running the %s DAG: %s", dag_id, " ".join(command))
    tail: collections.deque[str] = collections.deque(maxlen=40)
    timings = Path(env["PRODCAT_STAGE_TIMINGS"]) if use_executor and env.get(
        "PRODCAT_STAGE_TIMINGS") else None
    shown = len(timings.read_text().splitlines()) if timings and timings.exists() else 0
    with open(log_path, "w", encoding="utf-8") as log_file, subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1) as process:
        for line in process.stdout:
            log_file.write(line)
            tail.append(line.rstrip("\n"))
            if timings is None:
                console.show(line.rstrip("\n"))
            else:
                shown = _show_finished_stages(timings, shown, console)
    if timings is not None:
        _show_finished_stages(timings, shown, console)
    if process.returncode != 0:
        if not console.verbose:
            console.say("\n".join(tail))
        raise RuntimeError(f"airflow dags test {dag_id} failed with exit code "
                           f"{process.returncode}; full log: {log_path}")


def _show_finished_stages(timings: Path, shown: int, console: Console) -> int:
    """Say each stage that finished since the first ``shown`` timing lines (whole lines
    only: a stage may be writing its own); the new count."""
    lines = timings.read_text().split("\n")[:-1] if timings.exists() else []
    for line in lines[shown:]:
        row = json.loads(line)
        role = " (baseline)" if "baseline" in row["args"] else ""
        peak = f", peak {row['peak_rss_mib']:,.0f} MiB" if row.get("peak_rss_mib") else ""
        console.say(f"  {row['stage']}{role}: done in {row['seconds']:,.1f} s{peak}")
    return max(len(lines), shown)


def wait_for_updates(store: ProductStore, run_id: str, expected: int, timeout: float,
                     field: str = "prediction_run_id", console: Console | None = None) -> int:
    """Poll the store until ``expected`` products carry ``run_id`` in ``field`` (or time
    runs out)."""
    started = time.monotonic()
    deadline = started + timeout
    updated = first = None
    while time.monotonic() < deadline:
        store.refresh()
        updated = store.count({"term": {field: run_id}})
        first = updated if first is None else first
        if updated >= expected:
            break
        if console is not None:  # the rate since the waiting began, not since the run's start
            rate = (updated - first) / max(time.monotonic() - started, 1e-9)
            left = f", about {(expected - updated) / rate:,.0f} s left" if rate > 0 else ""
            console.progress(f"store: {updated:,} of {expected:,} products updated "
                             f"({field}), {rate:,.0f}/s{left}")
        else:
            log.info("store: %d of %d products updated (%s)", updated, expected, field)
        time.sleep(2)
    return updated or 0


def neighbour_sample(store: ProductStore, run_id: str, shown: int = 5) -> list[str]:
    """A product with its nearest neighbours, as the store holds them."""
    found = [p for p in store.search({"term": {"similar_run_id": run_id}}, size=50)
             if p.get("similar_products")]
    if not found:
        return ["  (no product carries neighbours)"]
    product = found[0]
    nearest = product["similar_products"][:shown]
    titles = store.sources([n["id"] for n in nearest])
    lines = [(f"  {product['id']}  {product.get('title', '')[:60]!r}  group "
             f"{product['similar_group']!r}")]
    lines += [f"    {n['score']:.3f}  {n['id']}  {titles.get(n['id'], {}).get('title', '')[:60]!r}"
              for n in nearest]
    return lines


def _metric_lines(model_type: str, evaluation: dict) -> list[str]:
    lines = []
    for objective, m in evaluation["objectives"].items():
        if objective == "exclusive":
            figures = f"accuracy {m['accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}"
        else:
            figures = f"micro-F1 {m['micro_f1']:.3f}  macro-F1 {m['macro_f1']:.3f}"
        lines.append(f"  {model_type + ' ' + objective:<22}{figures}  ({m['examples']} examples)")
    return lines


def summary(paths: RunPaths, delivered: dict, sample: dict, catalogue: dict,
            neighbours: list[str] | None = None) -> str:
    stages = storage.read_json(paths.stats_file("run"))["stages"]
    airflow_run = storage.read_json(paths.manifest)["airflow_run_id"]
    pre = stages["preprocess"]
    lines = [
        "", "prodcat demo: run summary", "=" * 25,
        f"run id                  {paths.run_id}",
        f"catalogue               {catalogue['catalogue']}",
        f"exclusive labels        {catalogue['labelled']}",
        f"products dumped         {stages['dump']['products']}",
        f"quarantined             {pre['quarantined']}"
        + "".join(f"\n  {reason:<22}{count}" for reason, count in pre["quarantined_by_reason"].items()),
        (f"images                  {pre['images_fetched']} fetched, {pre['images_unusable']} unusable "
        f"(reasons in {pre['quarantine_dir']})"),
        "examples per objective/split:",
        *(f"  {name:<22}{count}" for name, count in sorted(pre["examples"].items())),
        f"model                   {stages['train']['hparams_id']}"
        + (f" (baseline {stages['baseline_train']['hparams_id']})" if "baseline_train" in stages else ""),
        "validation metrics:",
        *_metric_lines(stages["train"]["model_type"], stages["evaluate_valid"]),
    ]
    if "baseline_evaluate_valid" in stages:
        lines += _metric_lines(stages["baseline_train"]["model_type"],
                               stages["baseline_evaluate_valid"])
    if "objectives" in stages.get("peer_evaluate_valid", {}):
        peer = stages["peer_evaluate_valid"]
        lines += _metric_lines(f"peer C={peer['C']:g}", peer)
    if "selection" in stages:
        chosen = stages["selection"]
        lines += [
            f"labelling queue         {chosen['queued']} products queued by "
            f"{chosen['strategy']}{' (diverse)' if chosen['diverse'] else ''}: "
            + ", ".join(f"{n} {split}" for split, n in chosen["queued_per_split"].items())
            + " (valid/test at random)",
            f"  scores                {json.dumps(chosen['score_quantiles'])}",
            "  predicted classes     " + ", ".join(
                f"{name} {n}" for name, n in list(chosen["predicted_class_mix"].items())[:6]),
            f"  stopping signal       {json.dumps(chosen['stopping'])}"]
    lines += [
        ("  (the same validation products for each, split by product group; macro-F1 is "
         "scikit-learn's)"),
        (f"predictions published   {stages['publish']['published']} "
        f"({stages['publish']['messages']} messages, {stages['publish']['workers']} workers, "
        f"{stages['publish']['seconds']} s)"),
        (f"predictions applied     {delivered['updated']} documents carry "
        f"prediction_run_id={paths.run_id}, {delivered['with_path']} with a category path"),
        (f"run statistics          in the store's {delivered['runs_index']!r} index: "
        f"{json.dumps(delivered['run_metrics'])}"),
        f"sample document         {json.dumps(sample)}",
    ]
    if "similar" in stages:
        similar, embedded = stages["similar"], stages["embed"]
        lines += [
            (f"image embeddings        {embedded['embedded']} products ({embedded['no_image']} "
            f"without an image); tower trained on {embedded['training_images']} "
            f"{embedded['labels']}-labelled images, validation accuracy "
            f"{embedded['validation_accuracy']}"),
            (f"visual neighbours       k={similar['k']} within the predicted category at level "
            f"{similar['level']}: {similar['groups']} groups (largest {similar['largest_group']}),"
            f" indexes {json.dumps(similar['index_types'])}; {delivered['similar']} products "
            "carry similar_products"),
            "sample neighbours (score, id, title):", *(neighbours or [])]
    lines += [
        f"run files               {paths.run_dir}",
        ("Airflow UI              make airflow-ui, then open "
        f"http://localhost:8080/dags/catalog_train/runs/{quote(airflow_run, safe='')}"),
    ]
    return "\n".join(lines)


def load_catalogue(store: ProductStore, args) -> dict:
    """The real demo catalogue plus oracle labels, or a generated one."""
    if args.catalog == "generated":
        loaded = load_products(store, demo_catalog.generate(args.products), recreate=True)
        return {"catalogue": f"generated ({loaded['loaded']} products)", "labelled": "built in"}
    directory = reviews_catalog.default_dir()
    if not reviews_catalog.is_current(directory):
        reviews_catalog.build(directory)
    loaded = load_products(store, read_jsonl(str(directory / "catalog.jsonl.gz")), recreate=True)
    labelled = oracle.label(store, directory, args.label_budget, "random", seed=0)
    return {"catalogue": f"women's clothing reviews ({loaded['loaded']} products)",
            "labelled": f"{labelled['labelled']} products (random, budget {args.label_budget}; "
                        + ", ".join(f"{n} in {split}" for split, n in
                                    labelled["labelled_per_split"].items()) + ")"}


def run_demo(args, settings: Settings, paths: RunPaths, env: dict) -> int:
    console = Console(args.verbose, STATE_DIR / "logs" / "demo")
    started = time.monotonic()
    with running_stack(settings):
        store = ProductStore.from_settings(settings)
        console.say("loading the catalogue into the store ...")
        catalogue = load_catalogue(store, args)
        console.say(f"  {catalogue['catalogue']}; labelled: {catalogue['labelled']}")
        run_dag(args.run_id, {"epochs": args.epochs}, env, console=console)
        # active learning follows the trained run: no run id given, the trained-run asset's
        # latest event names it, as when the scheduler triggers it on that event
        run_dag("", {"batch_size": args.selection_batch}, env, "catalog_label_selection",
                console)
        if args.similar_k and args.catalog == "generated":
            console.say("a generated catalogue has no images: catalog_similarity is skipped")
            args.similar_k = 0
        if args.similar_k:
            run_dag("", {"k": args.similar_k, "level": args.similar_level,
                         "embed_epochs": args.embed_epochs}, env, "catalog_similarity", console)
        published = storage.read_json(paths.stats_file("publish"))["published"]
        console.say("waiting for the updater to write the store ...")
        delivered = {"updated": wait_for_updates(store, args.run_id, published,
                                                 args.update_timeout, console=console),
                     "with_path": store.count({"bool": {"filter": [
                         {"term": {"prediction_run_id": args.run_id}},
                         {"exists": {"field": "prediction_path"}}]}}),
                     "runs_index": settings.runs_index,
                     "run_metrics": {name: round(value, 3) for name, value in
                                     runs_store(settings).get(args.run_id)["metrics"].items()}}
        if args.similar_k:
            similar = storage.read_json(paths.stats_file("publish_similar"))["published"]
            delivered["similar"] = wait_for_updates(store, args.run_id, similar,
                                                    args.update_timeout, "similar_run_id",
                                                    console)
        console.say(f"done in {time.monotonic() - started:,.0f} s\n")
        found = store.search({"term": {"prediction_run_id": args.run_id}}, size=1)
        sample = {k: found[0][k] for k in ("id", "title", "prediction_run_id", "prediction_path",
                                           "prediction")} if found else {}
        print(summary(paths, delivered, sample, catalogue, neighbour_sample(store, args.run_id)
                      if args.similar_k else None))
        if min(delivered["updated"], delivered["with_path"]) < published:
            print(f"error: only {delivered['updated']} of {published} predictions reached the "
                  f"store ({delivered['with_path']} with a category path)", file=sys.stderr)
            return 1
        if args.similar_k and delivered["similar"] < similar:
            print(f"error: only {delivered['similar']} of {similar} neighbour sets reached the "
                  "store", file=sys.stderr)
            return 1
        if args.ui_port:
            with running_ui(env, args.ui_port) as ui:
                print(f"\nlabelling UI: {ui['url']}  (user {ui['user']}, password in "
                      f"{ui['password_file']}); queue: {ui['progress']['queue_left']} products")
                if args.serve_ui is None and not sys.stdin.isatty():
                    print("not a terminal: the stack and the UI stop now (--serve-ui SECONDS "
                          "keeps them up; `make up` serves a generated catalogue with the UI)")
                elif args.serve_ui != 0:
                    serve(args.serve_ui)
    return 0



def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_stack.demo", description=__doc__)
    parser.add_argument("--catalog", choices=("reviews", "generated"), default="reviews",
                        help="reviews: the real demo catalogue; generated: a small synthetic one")
    parser.add_argument("--products", type=int, default=3000, help="size of a generated catalogue")
    parser.add_argument("--label-budget", default="2%",
                        help="exclusive labels the oracle reveals on the real catalogue")
    parser.add_argument("--run-id", default="demo-" + dt.datetime.now().strftime("%Y%m%dT%H%M%S"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--update-timeout", type=float, default=300)
    parser.add_argument("--selection-batch", type=int, default=100,
                        help="training products active learning queues for labelling")
    parser.add_argument("--similar-k", type=int, default=20,
                        help="visual neighbours per product (0: do not run catalog_similarity)")
    parser.add_argument("--similar-level", type=int, default=2,
                        help="neighbours share the predicted category at this level (0: global)")
    parser.add_argument("--embed-epochs", type=int, default=15, help="image tower epochs, at most")
    parser.add_argument("--ui-port", type=int, default=8090,
                        help="serve the labelling UI here at the end (0: do not start it)")
    parser.add_argument("--serve-ui", type=float, default=None, metavar="SECONDS",
                        help="keep the stack and the UI up this long at the end (default: until "
                             "Ctrl-C in a terminal, not at all otherwise)")
    parser.add_argument("--verbose", action="store_true",
                        help="show every line of every stage (TensorFlow, Beam, Airflow) here "
                             "instead of in the log files")
    args = parser.parse_args(argv)
    setup_logging(logging.INFO if args.verbose else logging.WARNING)
    if not args.verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        validate_id(args.run_id, "run_id")
        settings = Settings.from_env()
    except ValueError as err:
        parser.error(str(err))
    paths = RunPaths.for_run(args.run_id, settings.prefix)
    env = {**os.environ, **settings.as_env(), "PYTHONPATH": str(REPO_ROOT),
           **({"PRODCAT_VERBOSE": "1"} if args.verbose else {})}
    try:
        return run_demo(args, settings, paths, env)
    except (RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
