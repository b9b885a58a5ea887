"""The preprocessing job: the run's dump to TFRecords per objective and split.

Reads the dumped products, quarantines the ones that cannot be read (with the
reason), analyses and transforms the rest with TF Transform, and writes:
``tfrecords/{objective}_{split}.tfrecords-*`` for each objective's labelled
products, ``tfrecords/catalog_{split}.tfrecords-*`` for every product of a split
(the unlabelled pool, and the input of prediction), the transform function and its
vocabularies under ``transform_fn/``, and bad records under ``quarantine/``.

``python -m beam_pipelines.preprocess --run-id R [beam pipeline options...]``
Any option Beam knows (``--runner``, ``--project``, ...) is passed on to Beam. Without
``--runner``, or with ``--runner=DirectRunner``, the job runs on Beam's local
``FnApiRunner`` (``local_runner_options``).
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import tempfile
import uuid

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow_transform.beam as tft_beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from tfx_bsl.coders import example_coder
from tfx_bsl.tfxio import tf_example_record

from beam_pipelines import images, preprocessing
from beam_pipelines.raw_schema import GROUP_KEY, BadRecord, raw_schema, to_raw_instance
from shared_config import features, storage
from shared_config.cli import finish_stage, run_paths, setup_logging
from shared_config.paths import CATALOG, OBJECTIVES, SPLITS, RunPaths
from shared_config.settings import Settings
from shared_config.splits import split_for

log = logging.getLogger("prodcat.preprocess")
NAMESPACE = "prodcat"
GOOD, BAD = "good", "bad"


QUARANTINE_SAMPLE_CHARS = 2_000  # enough to recognise the record; the dump keeps it whole


def _quarantine(kind: str, reason: str, record: str) -> dict:
    return {"kind": kind, "reason": reason, "record": record[:QUARANTINE_SAMPLE_CHARS]}


# The counts are taken on branches of their own: TF Transform's transform reads the dump
# again (the deep copy, in build_pipeline), so the reading and parsing run twice.
def _count_parsed(_) -> None:
    Metrics.counter(NAMESPACE, "products_parsed").inc()


def _count_quarantined(record: dict) -> dict:
    Metrics.counter(NAMESPACE, f"quarantined_{record['kind']}").inc()
    return record


def _gzip_lines(readable_file):
    """A gzipped dump shard's lines, as bytes, streamed: Beam's own compressed-text reader
    held about 2.5 bytes for each byte of a shard's text until the shard was read
    (0.4 GiB per 100,000 products; see the README's preprocessing benchmark)."""
    with readable_file.open(compression_type=CompressionTypes.UNCOMPRESSED) as raw, \
            gzip.open(raw, "rb") as text:
        for line in text:
            yield line.rstrip(b"\r\n")


class ReadDump(beam.PTransform):
    """The dump's gzipped JSON-lines shards -> their lines (bytes), a shard per worker."""

    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = pattern

    def expand(self, pipeline):
        return (pipeline
                | "Match" >> fileio.MatchFiles(self.pattern)
                | "Open" >> fileio.ReadMatches()
                | "Lines" >> beam.FlatMap(_gzip_lines))


class ParseProduct(beam.DoFn):
    """JSON line -> raw instance, or a quarantine record with the reason."""

    def __init__(self, config):
        self.config = config

    def process(self, data: bytes):
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError as err:
            yield beam.pvalue.TaggedOutput(BAD, _quarantine(
                "not_utf8", f"not UTF-8: {err}", data.decode("utf-8", errors="replace")))
            return
        try:
            product = json.loads(line)
        except (ValueError, RecursionError) as err:  # also: an integer of over 4,300 digits
            yield beam.pvalue.TaggedOutput(BAD, _quarantine("not_json", f"not JSON: {err}", line))
            return
        try:
            yield to_raw_instance(product, self.config)
        except BadRecord as err:
            yield beam.pvalue.TaggedOutput(BAD, _quarantine(err.kind, str(err), line))
        except Exception as err:  # noqa: BLE001 (one odd product must never stop the run)
            yield beam.pvalue.TaggedOutput(BAD, _quarantine(
                "unexpected", f"cannot be read: {type(err).__name__}: {err}", line))


class FetchImages(beam.DoFn):
    """A batch of distinct image references -> (ref, normalised PNG bytes); failures to the
    quarantine."""

    def __init__(self, policy: images.FetchPolicy, size: int):
        self.policy, self.size = policy, size
        self.fetched = Metrics.counter(NAMESPACE, "images_fetched")

    def process(self, refs):
        for ref, data, reason in images.fetch_all(list(refs), self.policy, self.size):
            if data is None:
                yield beam.pvalue.TaggedOutput(BAD, _quarantine("image", f"image {reason}", ref))
                yield ref, b""
            else:
                self.fetched.inc()
                yield ref, data


def attach_images(products, image_fields: dict[str, int], policy: images.FetchPolicy,
                  references=None):
    """Replace each image reference by the image, fetched once per distinct reference and
    normalised to a greyscale PNG of its feature's size (``{field: image_size}``).

    A product whose image cannot be used keeps its other features and an empty
    image; the reference and the reason go to the quarantine. The fetched images reach
    the products as a side input (reference -> PNG, a few hundred bytes each), so the
    products stream past it: a join (a shuffle of the products with an image, flattened
    with the others) had the local runner hold every product, about 1.2 GiB per 100,000
    (the README's preprocessing benchmark). Memory grows with the distinct images instead.
    ``references``: the products to take the references from, read apart from ``products``
    (else the runner holds ``products`` until every image is fetched); default ``products``.
    """
    references = products if references is None else references
    problems = []
    for field, size in image_fields.items():
        fetched = (
            references
            | f"Refs_{field}" >> beam.FlatMap(lambda p, f=field: [p[f]] if p[f] else [])
            | f"Distinct_{field}" >> beam.Distinct()
            | f"Batch_{field}" >> beam.BatchElements(min_batch_size=1, max_batch_size=64)
            | f"Fetch_{field}" >> beam.ParDo(FetchImages(policy, size)).with_outputs(BAD, main=GOOD))
        problems.append(fetched[BAD])
        products = products | f"Attach_{field}" >> beam.Map(
            _with_bytes, field, beam.pvalue.AsDict(fetched[GOOD]))
    return products, problems


def _with_bytes(product: dict, field: str, fetched: dict) -> dict:
    """The product with its image's bytes in place of the reference (empty: none, or unusable)."""
    return {**product, field: fetched.get(product[field], b"") if product[field] else b""}


def _objectives_and_splits(group: bytes, exclusive_label: int, rule_labels: int):
    """Which TFRecord files one transformed product belongs to; the split follows the
    product's group, so the listings of one real product never straddle two splits."""
    split = split_for(group)
    targets = [(CATALOG, split)]
    if exclusive_label >= 0:
        targets.append(("exclusive", split))
    if rule_labels > 0:
        targets.append(("rule_based", split))
    return targets


class RouteExamples(beam.DoFn):
    """A batch of transformed products (an Arrow record batch) -> each product's serialised
    example, once, to each file it belongs to (tagged ``{objective}_{split}``), counted per
    file. The batch is encoded at once by tfx-bsl's encoder (C++), where a product at a time
    through Python cost more than the transform itself."""

    def __init__(self, schema, targets: dict[str, tuple[str, str]]):
        self.schema = schema
        self.names = {target: name for name, target in targets.items()}
        self.counters = {name: Metrics.counter(NAMESPACE, f"examples_{name}") for name in targets}

    def setup(self):
        self.encoder = example_coder.RecordBatchToExamplesEncoder(self.schema)

    def process(self, element):
        batch, _ = element
        encoded = self.encoder.encode(batch)
        # one value a product: the group key, the class index (-1: none); the rule labels' count
        groups = pc.list_flatten(batch.column(GROUP_KEY)).to_pylist()
        exclusive = pc.list_flatten(batch.column("exclusive_label")).to_pylist()
        rules = pc.list_value_length(batch.column("rule_based_labels")).to_pylist()
        for example, group, label, rule_labels in zip(encoded, groups, exclusive, rules):
            for target in _objectives_and_splits(group, label, rule_labels):
                name = self.names[target]
                self.counters[name].inc()
                yield beam.pvalue.TaggedOutput(name, example)


RECORD_BATCH_SIZE = 1_000


class ToRecordBatch(beam.DoFn):
    """A batch of raw instances -> one Arrow record batch in the layout TF Transform reads
    (every feature a list: one value, or a product's labels). TF Transform would otherwise
    encode each instance as a ``tf.Example`` and decode it again, a product at a time."""

    def __init__(self, arrow_schema):
        self.arrow_schema = arrow_schema

    def process(self, instances: list[dict]):
        one_each = pa.array(np.arange(len(instances) + 1), pa.int64())  # list offsets
        columns = []
        for field in self.arrow_schema:
            values = [instance[field.name] for instance in instances]
            if isinstance(values[0], list):  # the labels: a list a product already
                columns.append(pa.array(values, type=field.type))
            else:
                columns.append(pa.LargeListArray.from_arrays(
                    one_each, pa.array(values, type=field.type.value_type)))
        yield pa.RecordBatch.from_arrays(columns, schema=self.arrow_schema)


def build_pipeline(pipeline: beam.Pipeline, paths: RunPaths, config, temp_dir: str,
                   policy: images.FetchPolicy) -> None:
    # deep copy: TF Transform's transform reads the dump again rather than have the
    # runner hold every product until the analysis is done (on the local runner, about
    # 0.5 GiB per 100,000 products)
    with tft_beam.Context(temp_dir=temp_dir, use_deep_copy_optimization=True):
        def read(name: str):
            return (pipeline
                    | f"ReadDump{name}" >> ReadDump(paths.dump_dir + "*.jsonl.gz")
                    | f"Parse{name}" >> beam.ParDo(ParseProduct(config)).with_outputs(
                        BAD, main=GOOD))

        parsed = read("")
        _ = parsed[GOOD] | "CountParsed" >> beam.Map(_count_parsed)
        image_fields = {f.name: f.image_size for f in config.of_kind("image")}
        # a reading of its own for the image references (its quarantine and counts are
        # the main reading's)
        references = read("ForImages")[GOOD] if image_fields else None
        products, image_problems = attach_images(parsed[GOOD], image_fields, policy, references)
        _ = ((parsed[BAD], *image_problems)
             | "AllQuarantined" >> beam.Flatten()
             | "CountQuarantined" >> beam.Map(_count_quarantined)
             | "QuarantineJson" >> beam.Map(json.dumps)
             | "WriteQuarantine" >> beam.io.WriteToText(
                 paths.quarantine_dir + "bad_records", file_name_suffix=".jsonl"))
        tfxio = tf_example_record.TFExampleBeamRecord(
            physical_format="inmem", telemetry_descriptors=["prodcat"], schema=raw_schema(config))
        batches = (products
                   | "Batch" >> beam.BatchElements(min_batch_size=RECORD_BATCH_SIZE,
                                                    max_batch_size=RECORD_BATCH_SIZE)
                   | "ToRecordBatch" >> beam.ParDo(ToRecordBatch(tfxio.ArrowSchema())))
        raw = (batches, tfxio.TensorAdapterConfig())
        transformed, transform_fn = raw | "AnalyzeAndTransform" >> tft_beam.AnalyzeAndTransformDataset(
            preprocessing.preprocessing_fn, output_record_batches=True)
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(paths.transform_fn_dir)
        examples, metadata = transformed
        targets = {f"{o}_{s}": (o, s) for o in (*OBJECTIVES, CATALOG) for s in SPLITS}
        routed = examples | "Route" >> beam.ParDo(RouteExamples(metadata.schema, targets)).with_outputs(
            *targets)
        for name, (objective, split) in targets.items():
            _ = routed[name] | f"Write_{name}" >> beam.io.WriteToTFRecord(
                paths.tfrecords(objective, split))


def _counters(result) -> dict:
    counters = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    totals: dict[str, int] = {}
    for counter in counters:
        name = counter.key.metric.name
        totals[name] = totals.get(name, 0) + (counter.committed or counter.attempted or 0)
    return totals


def policy_from_settings(settings: Settings | None = None, **limits) -> images.FetchPolicy:
    """The image-fetch policy: where images may come from (settings), and the limits."""
    settings = settings or Settings.from_env()
    return images.FetchPolicy(local_roots=settings.image_roots,
                              allowed_networks=settings.image_allowed_networks, **limits)


def clear_outputs(paths: RunPaths) -> None:
    """Remove an earlier preprocessing's files, so no stale shard is read with the new ones."""
    for directory in (paths.tfrecords_dir, paths.transform_fn_dir, paths.quarantine_dir):
        if storage.exists(directory):
            log.info("removing the earlier preprocessing output in %s", directory)
            storage.remove(directory)
        storage.makedirs(directory)


# The local runner. Beam's DirectRunner (2.68 and later) first tries the Prism runner, which
# downloads its binary from GitHub when none is cached, and runs the job there if that works;
# the job fetches nothing its configuration does not name, so it runs on the runner the
# DirectRunner falls back to, Beam's FnApiRunner (what Beam's notes advise for a pinned local
# runner). Its options (``--direct_running_mode``, ``--direct_num_workers``) are the same.
LOCAL_RUNNER = "FnApiRunner"
DIRECT_RUNNER_NAMES = ("direct", "directrunner")


def local_runner_options(beam_args: list[str]) -> PipelineOptions:
    """Beam's options from the command line; no runner or the DirectRunner -> ``LOCAL_RUNNER``,
    any other runner (Dataflow, Flink, Prism named as such ...) as given."""
    options = PipelineOptions(beam_args)
    standard = options.view_as(StandardOptions)
    if standard.runner is None or standard.runner.lower() in DIRECT_RUNNER_NAMES:
        if standard.runner is not None:
            log.info("--runner=%s: running on Beam's %s, the DirectRunner's own local runner, "
                     "without its attempt at the Prism runner (a download)", standard.runner,
                     LOCAL_RUNNER)
        standard.runner = LOCAL_RUNNER
    return options


def run(paths: RunPaths, beam_args: list[str], max_bad_ratio: float,
        policy: images.FetchPolicy | None = None) -> dict:
    config = features.load()
    policy = policy or policy_from_settings()
    options = local_runner_options(beam_args)
    clear_outputs(paths)
    with tempfile.TemporaryDirectory(prefix="prodcat-tft-") as local_temp:
        temp_dir = options.get_all_options().get("temp_location") or local_temp
        pipeline = beam.Pipeline(options=options)
        build_pipeline(pipeline, paths, config, temp_dir, policy)
        result = pipeline.run()
        result.wait_until_finish()
    counts = _counters(result)
    reasons = {k.removeprefix("quarantined_"): v for k, v in sorted(counts.items())
               if k.startswith("quarantined_")}
    image_problems = reasons.pop("image", 0)
    bad = sum(reasons.values())
    read = counts.get("products_parsed", 0) + bad
    summary = {
        "products_read": read,
        "quarantined": bad,
        "quarantined_by_reason": reasons,
        "images_fetched": counts.get("images_fetched", 0),
        "images_unusable": image_problems,
        "examples": {k.removeprefix("examples_"): v for k, v in sorted(counts.items())
                     if k.startswith("examples_")},
        "transform_fn_dir": paths.transform_fn_dir,
        "quarantine_dir": paths.quarantine_dir,
    }
    storage.write_json(paths.example_counts, summary["examples"])
    # An id for this output: training resumes only from a checkpoint made on the same one.
    summary["output_id"] = uuid.uuid4().hex
    storage.write_json(paths.preprocess_output, {"output_id": summary["output_id"]})
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
    defaults = images.FetchPolicy()
    parser.add_argument("--image-timeout", type=float, default=defaults.timeout,
                        help="seconds per connect or read of an image request")
    parser.add_argument("--image-deadline", type=float, default=defaults.deadline,
                        help="seconds per image request in all, redirects included")
    parser.add_argument("--image-max-bytes", type=int, default=defaults.max_bytes)
    parser.add_argument("--image-retries", type=int, default=defaults.retries)
    parser.add_argument("--image-concurrency", type=int, default=defaults.concurrency,
                        help="image requests in flight per worker")
    args, beam_args = parser.parse_known_args(argv)
    paths = run_paths(parser, args.run_id)
    if not 0 <= args.max_bad_ratio <= 1:
        parser.error("--max-bad-ratio must be between 0 and 1")
    if min(args.image_timeout, args.image_deadline, args.image_max_bytes,
           args.image_concurrency) <= 0 or args.image_retries < 0:
        parser.error("image timeout, deadline, size limit and concurrency must be positive, "
                     "retries >= 0")
    try:
        policy = policy_from_settings(
            timeout=args.image_timeout, deadline=args.image_deadline,
            max_bytes=args.image_max_bytes, retries=args.image_retries,
            concurrency=args.image_concurrency)
    except ValueError as err:
        parser.error(str(err))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    finish_stage(paths, "preprocess", run(paths, beam_args, args.max_bad_ratio, policy))


if __name__ == "__main__":
    main()
