"""The end-to-end benchmark's account of tasks that ran side by side."""
from __future__ import annotations

from benchmarks.end_to_end import busy_seconds, plot, table, timeline


def side_by_side_run() -> dict:
    """Figures as ``one_run`` records them: the model's train beside the baseline task."""
    return {"label": "side by side", "products": 1000, "side_by_side": True,
            "dag_seconds": 130.0, "total_seconds": 160.0, "airflow_overhead_seconds": 10.0,
            "selection_seconds": 5.0, "stages": {
                "load": {"seconds": 20.0, "items": 1000, "started": 0.0},
                "preprocess": {"seconds": 40.0, "started": 25.0, "cpu_seconds": 38.0},
                "model.train": {"seconds": 50.0, "started": 65.0, "cpu_seconds": 80.0},
                "train_and_evaluate_baseline": {"seconds": 70.0, "started": 66.0},
                "publish_predictions": {"seconds": 5.0, "started": 115.0},
                # the updater writes from the publishing on, beside the baseline task
                "updates after publish": {"seconds": 40.0, "items": 1000, "started": 120.0}}}


def test_tasks_that_overlap_count_once_in_the_busy_time():
    assert busy_seconds([(0, 10), (5, 20), (30, 35)]) == 25
    assert busy_seconds([(5, 20), (0, 10), (6, 7)]) == 20
    assert busy_seconds([]) == 0


def test_the_timeline_places_stages_where_they_ran():
    spans = {name: (start, seconds) for name, start, seconds in timeline(side_by_side_run())}
    assert spans["load"] == (0.0, 20.0)
    assert spans["model.train"] == (65.0, 50.0)
    assert spans["train_and_evaluate_baseline"] == (66.0, 70.0)  # beside the model
    assert spans["updates after publish"] == (120.0, 40.0)


def test_figures_without_task_starts_are_drawn_one_after_another():
    run = side_by_side_run()
    for stage in run["stages"].values():
        stage.pop("started", None)
    spans = timeline(run)
    starts = [start for _, start, _ in spans]
    assert starts == sorted(starts) and starts[1] == 20.0
    assert spans[-1][0] == "Airflow scheduling and start-up"


def test_the_table_says_how_the_tasks_ran_and_how_many_cores_each_kept_busy(tmp_path):
    text = table(side_by_side_run())
    assert "side by side" in text
    row = next(line for line in text.splitlines() if line.startswith("model.train"))
    assert "1.60" in row  # 80 CPU seconds in 50 s
    plot([side_by_side_run()], str(tmp_path / "plot.png"))
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_the_update_watch_waits_for_the_publishing_then_for_every_prediction(settings):
    """On the real store: nothing counts before the predictions are published; the watch
    ends, with the time, once every published product holds the run's prediction."""
    import time

    from benchmarks.end_to_end import UpdateWatch
    from shared_config import storage
    from shared_config.paths import RunPaths
    from store import demo_catalog
    from store.client import ProductStore
    from store.load import load_products

    store = ProductStore.from_settings(settings)
    products = list(demo_catalog.generate(6, seed=3))
    load_products(store, products, recreate=True)
    stats = RunPaths.for_run("watched", settings.prefix).stats_file("publish")
    watch = UpdateWatch(store, "watched", stats, interval=0.05)
    watch.start()
    try:
        time.sleep(0.3)
        assert watch.is_alive() and watch.published is None and watch.updated is None
        storage.write_json(stats, {"published": 6})
        store.update_partial([(p["id"], {"prediction_run_id": "watched"})
                              for p in products[:4]])
        time.sleep(0.3)
        assert watch.is_alive() and watch.published == 6
        before = time.time()
        store.update_partial([(p["id"], {"prediction_run_id": "watched"})
                              for p in products[4:]])
        watch.join(10)
    finally:
        watch.stop()
    assert not watch.is_alive() and watch.updated == 6 and watch.done_at >= before


def test_the_update_watch_hands_over_the_store_s_error(settings, tmp_path):
    """A store that stops answering ends the watch with the error kept for the caller."""
    import dataclasses

    from benchmarks.end_to_end import UpdateWatch
    from local_stack.services import free_port
    from shared_config import storage
    from store.client import ProductStore

    gone = dataclasses.replace(settings, store_url=f"http://127.0.0.1:{free_port()}")
    stats = str(tmp_path / "publish.json")
    storage.write_json(stats, {"published": 3})
    watch = UpdateWatch(ProductStore.from_settings(gone), "r", stats, interval=0.05)
    watch.start()
    watch.join(120)
    assert not watch.is_alive() and watch.done_at is None
    assert watch.error is not None and "onnect" in str(watch.error)
