"""The preprocessing job: the run's dump to TFRecords per objective and split.

Reads the dumped products, quarantines the ones that cannot be read (with the
reason), analyses and transforms the rest with TF Transform, and writes:
``tfrecords/{objective}_{split}.tfrecords-*`` for each objective's labelled
products, ``tfrecords/catalog_all.tfrecords-*`` for every product (the
unlabelled pool and the input of prediction), the transform function and its
vocabularies under ``transform_fn/``, and bad records under ``quarantine/``.

``python -m beam_pipelines.preprocess --run-id R [beam pipeline options...]``
Any option Beam knows (``--runner``, ``--project``, ...) is passed on to Beam.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile

import apache_beam as beam
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from tensorflow_transform.tf_metadata import dataset_metadata

from beam_pipelines import preprocessing
from beam_pipelines.raw_schema import BadRecord, raw_schema, to_raw_instance
from shared_config import features
from shared_config.cli import finish_stage, run_paths, setup_logging
from shared_config.paths import CATALOG_OBJECTIVE, CATALOG_SPLIT, OBJECTIVES, RunPaths
from shared_config.splits import split_for

log = logging.getLogger("prodcat.preprocess")
NAMESPACE = "prodcat"
GOOD, BAD = "good", "bad"


class ParseProduct(beam.DoFn):
    """JSON line -> raw instance, or a quarantine record with the reason."""

    def __init__(self, config):
        self.config = config
        self.read = Metrics.counter(NAMESPACE, "products_read")
        self.quarantined = Metrics.counter(NAMESPACE, "quarantined")

    def process(self, line: str):
        self.read.inc()
        try:
            yield to_raw_instance(json.loads(line), self.config)
        except (json.JSONDecodeError, BadRecord) as err:
            self.quarantined.inc()
            reason = f"{type(err).__name__}: {err}"
            yield beam.pvalue.TaggedOutput(BAD, {"reason": reason, "record": line[:10_000]})


def _objectives_and_splits(example: dict):
    """Which TFRecord files one transformed product belongs to."""
    split = split_for(example["id"])
    targets = [(CATALOG_OBJECTIVE, CATALOG_SPLIT)]
    if example["exclusive_label"] >= 0:
        targets.append(("exclusive", split))
    if len(example["rule_based_labels"]) > 0:
        targets.append(("rule_based", split))
    return targets


def build_pipeline(pipeline: beam.Pipeline, paths: RunPaths, config, temp_dir: str) -> None:
    with tft_beam.Context(temp_dir=temp_dir):
        parsed = (
            pipeline
            | "ReadDump" >> beam.io.ReadFromText(paths.dump_dir + "*.jsonl.gz")
            | "Parse" >> beam.ParDo(ParseProduct(config)).with_outputs(BAD, main=GOOD)
        )
        _ = (parsed[BAD]
             | "QuarantineJson" >> beam.Map(json.dumps)
             | "WriteQuarantine" >> beam.io.WriteToText(
                 paths.quarantine_dir + "bad_records", file_name_suffix=".jsonl"))
        raw = (parsed[GOOD], dataset_metadata.DatasetMetadata(raw_schema(config)))
        transformed, transform_fn = raw | "AnalyzeAndTransform" >> tft_beam.AnalyzeAndTransformDataset(
            preprocessing.preprocessing_fn, output_record_batches=False)
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(paths.transform_fn_dir)
        examples, metadata = transformed
        coder = tft.coders.ExampleProtoCoder(metadata.schema)
        routed = examples | "Route" >> beam.FlatMap(
            lambda ex: [(target, ex) for target in _objectives_and_splits(ex)])
        targets = [(o, s) for o in OBJECTIVES for s in ("train", "valid", "test")]
        targets.append((CATALOG_OBJECTIVE, CATALOG_SPLIT))
        for objective, split in targets:
            name = f"{objective}_{split}"
            counter = Metrics.counter(NAMESPACE, f"examples_{name}")
            _ = (routed
                 | f"Select_{name}" >> beam.Filter(lambda kv, t=(objective, split): kv[0] == t)
                 | f"Count_{name}" >> beam.Map(lambda kv, c=counter: (c.inc(), kv[1])[1])
                 | f"Encode_{name}" >> beam.Map(coder.encode)
                 | f"Write_{name}" >> beam.io.WriteToTFRecord(paths.tfrecords(objective, split)))


def _counters(result) -> dict:
    counters = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    totals: dict[str, int] = {}
    for counter in counters:
        name = counter.key.metric.name
        totals[name] = totals.get(name, 0) + (counter.committed or counter.attempted or 0)
    return totals


def run(paths: RunPaths, beam_args: list[str], max_bad_ratio: float) -> dict:
    config = features.load()
    options = PipelineOptions(beam_args or ["--runner=DirectRunner"])
    with tempfile.TemporaryDirectory(prefix="prodcat-tft-") as local_temp:
        temp_dir = options.get_all_options().get("temp_location") or local_temp
        pipeline = beam.Pipeline(options=options)
        build_pipeline(pipeline, paths, config, temp_dir)
        result = pipeline.run()
        result.wait_until_finish()
    counts = _counters(result)
    read, bad = counts.get("products_read", 0), counts.get("quarantined", 0)
    summary = {
        "products_read": read,
        "quarantined": bad,
        "examples": {k.removeprefix("examples_"): v for k, v in sorted(counts.items())
                     if k.startswith("examples_")},
        "transform_fn_dir": paths.transform_fn_dir,
        "quarantine_dir": paths.quarantine_dir,
    }
    if read == 0:
        raise RuntimeError(f"no products found under {paths.dump_dir}")
    if bad / read > max_bad_ratio:
        raise RuntimeError(
            f"{bad} of {read} products were quarantined ({bad / read:.1%}), more than the "
            f"allowed {max_bad_ratio:.1%}; see {paths.quarantine_dir}")
    return summary


def main(argv=None) -> None:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m beam_pipelines.preprocess",
                                     description=__doc__)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--max-bad-ratio", type=float, default=0.05,
                        help="fail when more than this share of products is quarantined")
    args, beam_args = parser.parse_known_args(argv)
    paths = run_paths(parser, args.run_id)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    finish_stage(paths, "preprocess", run(paths, beam_args, args.max_bad_ratio))


if __name__ == "__main__":
    main()
