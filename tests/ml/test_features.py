import pytest

from shared_config import features


def test_default_config_lists_every_kind():
    config = features.load()
    kinds = {f.kind for f in config.features}
    assert kinds == {"text", "categorical", "dense", "image"}
    assert config.label_fields == {"exclusive": "exclusive_label", "rule_based": "rule_labels"}
    brand = next(f for f in config.features if f.name == "brand")
    assert (brand.vocab_size, brand.embedding_dim) == (5000, 10)


def test_config_path_from_environment(tmp_path, monkeypatch):
    path = tmp_path / "f.yaml"
    path.write_text("features:\n  title: {kind: text, vocab_size: 50}\n"
                    "labels:\n  exclusive: {field: e}\n  rule_based: {field: r}\n")
    monkeypatch.setenv("PRODCAT_FEATURE_CONFIG", str(path))
    config = features.load()
    assert [(f.name, f.vocab_size) for f in config.features] == [("title", 50)]


@pytest.mark.parametrize("body, complaint", [
    ("features: {}\n", "non-empty"),
    ("features:\n  t: {kind: picture}\n", "kind"),
    ("features:\n  t: {kind: text}\n", "vocab_size"),
    ("features:\n  b: {kind: categorical, vocab_size: 5}\n", "embedding_dim"),
    ("features:\n  p: {kind: dense, transform: sqrt}\n", "transform"),
    ("features:\n  t: {kind: text, vocab_size: 5}\nlabels: {exclusive: {field: e}}\n", "labels"),
    ("features: [oops\n", "cannot read"),
])
def test_bad_configs_say_what_is_wrong(tmp_path, body, complaint):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(features.FeatureConfigError, match=complaint):
        features.load(path)


def test_image_features_need_a_size(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("features:\n  image: {kind: image}\n"
                    "labels:\n  exclusive: {field: e}\n  rule_based: {field: r}\n")
    with pytest.raises(features.FeatureConfigError, match="image_size"):
        features.load(path)
