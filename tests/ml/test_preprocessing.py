"""The Beam + TF Transform job on hand-made, hostile and reconfigured inputs."""
from __future__ import annotations

import gzip
import html
import json
import math
import socket
import unicodedata

import pytest
import tensorflow as tf
import tensorflow_transform as tft
from apache_beam.options.pipeline_options import StandardOptions
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from beam_pipelines import images, raw_schema, text_ops
from beam_pipelines.preprocess import local_runner_options, run
from beam_pipelines.raw_schema import BadRecord, to_raw_instance
from shared_config import features, storage
from shared_config.paths import SPLITS, RunPaths

POLICY = images.FetchPolicy(timeout=1, retries=0)


def run_job(tmp_path, lines: list[str | bytes], max_bad_ratio: float = 1.0, shards: int = 1):
    """The job on a dump of these lines, dealt round-robin into ``shards`` files."""
    paths = RunPaths.for_run("job", str(tmp_path / "prefix"))
    storage.makedirs(paths.dump_dir)
    for shard in range(shards):
        with gzip.open(paths.dump_dir + f"part-{shard:05d}.jsonl.gz", "wb") as dump:
            for line in lines[shard::shards]:
                dump.write((line.encode("utf-8") if isinstance(line, str) else line) + b"\n")
    return paths, run(paths, [], max_bad_ratio, POLICY)


def read_examples(paths: RunPaths, objective: str, split: str) -> list[dict]:
    output = tft.TFTransformOutput(paths.transform_fn_dir)
    spec = output.transformed_feature_spec()
    examples = []
    for path in storage.glob(paths.tfrecord_files(objective, split)):
        for record in tf.data.TFRecordDataset(path):
            parsed = tf.io.parse_single_example(record, spec)
            examples.append({k: (v.values.numpy().tolist() if isinstance(v, tf.SparseTensor)
                                 else v.numpy()) for k, v in parsed.items()})
    return examples


def read_catalogue(paths: RunPaths) -> list[dict]:
    return [e for split in SPLITS for e in read_examples(paths, "catalog", split)]


def vocabulary(paths: RunPaths, name: str) -> list[str]:
    """A vocabulary's tokens, in id order (a text feature's lines also hold each token's
    document frequency: ``frequency token``)."""
    output = tft.TFTransformOutput(paths.transform_fn_dir)
    text = name in {f.name for f in features.load().of_kind("text")}
    return [v.decode().split(" ", 1)[1] if text else v.decode()
            for v in output.vocabulary_by_name(name)]


def test_text_cleaning_is_the_same_for_every_affiliate():
    texts = tf.constant(["Shoes > Sneakers", "shoes|sneakers", "Shoes // Sneakers",
                         "shoes › sneakers", "<p>Shoes</p>&nbsp;/ <b>SNEAKERS</b>!!"])
    assert set(text_ops.clean(texts).numpy().tolist()) == {b"shoes sneakers"}
    words = text_ops.tokens(tf.constant(["ok " + "x" * 31 + " fine ..."]))
    assert words.values.numpy().tolist() == [b"ok", b"fine"]


def test_hand_made_products_are_cleaned_encoded_and_routed(tmp_path):
    products = [
        {"id": "p1", "title": "<b>Red</b> Dress &amp; Belt", "brand": "Acme ", "price": 10,
         "raw_category": "Women > Dresses", "exclusive_label": "Dresses", "rule_labels": ["Dresses"]},
        {"id": "p2", "title": "red SHIRT", "brand": "acme", "raw_category": "women|tops",
         "price": 100, "rule_labels": ["Tops"]},
        {"id": "p3", "title": "blue\u200b dress", "brand": "Other", "price": None,
         "raw_category": "Women // Dresses", "exclusive_label": "Tops"},
    ]
    paths, summary = run_job(tmp_path, [json.dumps(p) for p in products])
    assert summary["products_read"] == 3 and summary["quarantined"] == 0
    assert sorted(vocabulary(paths, "title")) == ["belt", "blue", "dress", "red", "shirt"]
    assert sorted(vocabulary(paths, "raw_category")) == ["dresses", "tops", "women"]
    assert sorted(vocabulary(paths, "brand")) == ["acme", "other"]
    assert sorted(vocabulary(paths, "exclusive")) == ["Dresses", "Tops"]

    catalog = {e["id"].decode(): e for e in read_catalogue(paths)}
    assert set(catalog) == {"p1", "p2", "p3"}
    title_vocab = vocabulary(paths, "title")
    p3 = catalog["p3"]
    weights = dict(zip((title_vocab[i] for i in p3["title_ids"]), p3["title_weights"]))
    # tf-idf with TF Transform's smoothed idf: (count / words) * (log((N + 1) / (df + 1)) + 1)
    assert weights["blue"] == pytest.approx(0.5 * (math.log(4 / 2) + 1), rel=1e-5)
    assert weights["dress"] == pytest.approx(0.5 * (math.log(4 / 3) + 1), rel=1e-5)
    exclusive = vocabulary(paths, "exclusive")
    assert exclusive[catalog["p1"]["exclusive_label"]] == "Dresses"
    assert catalog["p2"]["exclusive_label"] == -1
    assert catalog["p3"]["rule_based_labels"] == []
    assert catalog["p1"]["brand"] == catalog["p2"]["brand"]
    routed = sum(summary["examples"].get(f"exclusive_{s}", 0) for s in ("train", "valid", "test"))
    assert routed == 2


HOSTILE = [
    "{not json", "", "null", "[1, 2]", '"just a string"', "{}", '{"id": ""}', '{"id": 42}',
    '{"id": "big", "description": "' + "x" * 150_000 + '"}',
    '{"id": "nested", "title": {"a": 1}}', '{"id": "list-brand", "brand": ["a", "b"]}',
    '{"id": "nan-price", "price": "NaN"}', '{"id": "bool-price", "price": true}',
    '{"id": "bad-label", "rule_labels": [1, 2]}', '{"id": "two-exclusive", "exclusive_label": ["a", "b"]}',
    '{"id": "deep", "title": ' + "[" * 5000 + "]" * 5000 + "}",
    json.dumps({"id": "html", "title": "<script>alert(1)</script>&lt;b&gt; Caf\u00e9 \u202eevil"}),
    json.dumps({"id": "nulls", "title": None, "brand": None, "price": None, "rule_labels": None}),
    json.dumps({"id": "emoji", "title": "\U0001f525\U0001f525 \u0000 zero\u200bwidth", "price": "12.5"}),
    json.dumps({"id": "broken-image", "title": "a dress", "image": "/definitely/not/here.png"}),
    json.dumps({"id": "ok", "title": "plain shirt", "rule_labels": ["Tops"]}),
    b'{"id": "latin-1", "title": "caf\xe9 cr\xe8me"}',  # not UTF-8
]


def test_every_hostile_record_ends_in_the_tfrecords_or_the_quarantine(tmp_path):
    paths, summary = run_job(tmp_path, HOSTILE, shards=3)
    kept = {e["id"].decode() for e in read_catalogue(paths)}
    quarantined = []
    for path in storage.glob(paths.quarantine_dir + "*.jsonl"):
        with open(path) as rows:
            quarantined += [json.loads(row) for row in rows]
    product_problems = [q for q in quarantined if q["kind"] != "image"]
    assert summary["products_read"] == len(HOSTILE)
    assert len(kept) + len(product_problems) == len(HOSTILE)
    assert summary["quarantined"] == len(product_problems)
    assert sum(summary["quarantined_by_reason"].values()) == summary["quarantined"]
    assert kept == {"nan-price", "html", "nulls", "emoji", "broken-image", "ok"} - {"nan-price"}
    assert all(q["reason"] for q in quarantined)
    assert {q["kind"] for q in product_problems} == {
        "not_json", "not_an_object", "missing_id", "oversized", "wrong_type", "bad_label",
        "not_utf8"}
    latin = next(q for q in quarantined if q["kind"] == "not_utf8")
    assert "caf\ufffd cr\ufffdme" in latin["record"] and "utf-8" in latin["reason"]
    assert [q["record"] for q in quarantined if q["kind"] == "image"] == ["/definitely/not/here.png"]


def test_the_job_looks_up_no_host_but_this_machine(tmp_path, monkeypatch):
    """Beam's DirectRunner would first fetch the Prism runner's binary from GitHub; the job
    runs on Beam's local FnApiRunner and names no host beyond this machine."""
    looked_up = []
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        looked_up.append(host.decode() if isinstance(host, bytes) else str(host))
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    products = [{"id": f"p{i}", "title": f"red dress {i}", "price": i} for i in range(4)]
    paths, summary = run_job(tmp_path, [json.dumps(p) for p in products])
    assert summary["products_read"] == 4 and len(read_catalogue(paths)) == 4
    assert set(looked_up) <= {"localhost", "127.0.0.1", "::1", "None", ""}, looked_up


@pytest.mark.parametrize("given, runner", [([], "FnApiRunner"),
                                           (["--runner=DirectRunner"], "FnApiRunner"),
                                           (["--runner", "direct"], "FnApiRunner"),
                                           (["--runner=DataflowRunner"], "DataflowRunner"),
                                           (["--runner=PrismRunner"], "PrismRunner")])
def test_the_local_runner_replaces_only_the_direct_runner(given, runner):
    options = local_runner_options([*given, "--direct_running_mode=multi_processing"])
    assert options.view_as(StandardOptions).runner == runner
    assert options.get_all_options()["direct_running_mode"] == "multi_processing"


def test_too_many_bad_records_fail_the_job_and_say_why(tmp_path):
    with pytest.raises(RuntimeError, match=r"quarantined .* more than the allowed 10.0%"):
        run_job(tmp_path, ["{broken"] * 3 + [json.dumps({"id": "a"})], max_bad_ratio=0.1)


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.dictionaries(st.sampled_from(["id", "title", "brand", "price", "rule_labels",
                                     "exclusive_label", "image", "size"]),
                    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                              st.text(), st.lists(st.text(max_size=5), max_size=3),
                              st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))),
    st.lists(st.integers()), st.text(), st.none()))
def test_any_json_value_is_either_an_instance_or_a_bad_record(value):
    config = features.load()
    try:
        instance = to_raw_instance(value, config)
    except BadRecord as err:
        assert err.kind and str(err)
        return
    assert isinstance(instance["id"], str) and instance["id"].strip()
    for feature in config.features:
        expected = float if feature.kind == "dense" else str
        assert isinstance(instance[feature.name], expected)
    assert all(isinstance(v, str) for v in instance["rule_based"])


@hypothesis_settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_ascii_text_skips_a_normalisation_that_would_not_change_it(text):
    full = raw_schema._INVISIBLE.sub("", unicodedata.normalize("NFKC", html.unescape(text)))
    assert raw_schema.normalise_text(text) == full
    assert raw_schema.valid_unicode(text) == text


def test_a_changed_feature_config_changes_the_job(tmp_path, monkeypatch):
    config = tmp_path / "features.yaml"
    config.write_text(
        "features:\n"
        "  title: {kind: categorical, vocab_size: 2, embedding_dim: 3}\n"
        "  description: {kind: text, vocab_size: 4}\n"
        "labels:\n  exclusive: {field: exclusive_label}\n  rule_based: {field: rule_labels}\n")
    monkeypatch.setenv("PRODCAT_FEATURE_CONFIG", str(config))
    products = [{"id": f"p{i}", "title": t, "description": "one two three four five six",
                 "price": 3} for i, t in enumerate(["a", "a", "b", "c"])]
    paths, _ = run_job(tmp_path, [json.dumps(p) for p in products])
    spec = tft.TFTransformOutput(paths.transform_fn_dir).transformed_feature_spec()
    assert spec["title"].dtype == tf.int64 and "title_ids" not in spec
    assert {"description_ids", "description_weights"} <= set(spec)
    assert "price" not in spec and "brand" not in spec
    assert vocabulary(paths, "title")[0] == "a" and len(vocabulary(paths, "title")) == 2
    assert len(vocabulary(paths, "description")) == 4
