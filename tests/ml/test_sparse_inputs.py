"""Sparse TF-IDF inputs: the first layer over sparse parts is one Dense on their
concatenation, and LazyAdam moves only the rows a sparse gradient touched."""
import keras
import numpy as np
import tensorflow as tf

from trainer.model import Parts, dense_layer
from trainer.optimizers import LazyAdam


def test_dense_layer_over_sparse_and_dense_parts_is_one_dense_on_their_concatenation():
    rng = np.random.default_rng(0)
    words = (rng.random((5, 30)) < 0.1) * rng.random((5, 30)).astype("float32")
    other = rng.normal(size=(5, 4)).astype("float32")
    sparse_in = keras.Input((30,), sparse=True, name="words")
    dense_in = keras.Input((4,), name="other")
    out = dense_layer(Parts((dense_in,), (("words", sparse_in),)), 3, "first", activation="relu")
    model = keras.Model({"words": sparse_in, "other": dense_in}, out)
    kernel_dense, bias = model.get_layer("first_dense").get_weights()
    (kernel_words,) = model.get_layer("first_words").get_weights()
    expected = np.maximum(np.concatenate([other, words], 1)
                          @ np.concatenate([kernel_dense, kernel_words]) + bias, 0)
    got = model({"words": tf.sparse.from_dense(words), "other": tf.constant(other)}).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_lazy_adam_updates_only_the_touched_rows_and_matches_adam_there():
    initial = np.arange(12, dtype="float32").reshape(6, 2) / 10
    lazy_var, dense_var = keras.Variable(initial), keras.Variable(initial)
    lazy, adam = LazyAdam(0.1), keras.optimizers.Adam(0.1)
    # rows 1 and 4 touched, row 4 twice (its gradients sum)
    grad = tf.IndexedSlices(tf.constant([[1.0, -2.0], [0.5, 0.5], [0.5, 0.5]]),
                            tf.constant([1, 4, 4]), tf.constant([6, 2]))
    for _ in range(3):
        lazy.apply_gradients([(grad, lazy_var)])
        adam.apply_gradients([(tf.convert_to_tensor(grad), dense_var)])
    moved = np.abs(lazy_var.numpy() - initial).max(axis=1) > 0
    assert moved.tolist() == [False, True, False, False, True, False]
    np.testing.assert_allclose(lazy_var.numpy()[[1, 4]], dense_var.numpy()[[1, 4]], rtol=1e-6)


def test_the_sparse_input_layer_gathers_the_kernel_rows_it_needs_and_matches_dense():
    """Keras' Dense reads its whole kernel (copied on every read once updated row by row);
    ``SparseInputDense`` gathers the rows of the words present from the variable itself,
    with the same outputs (an empty row gives the bias) and the same gradients."""
    from trainer.model import SparseInputDense

    rng = np.random.default_rng(3)
    words = (rng.random((4, 50)) < 0.2) * rng.random((4, 50)).astype("float32")
    words[2] = 0  # a product without a single known word
    layer = SparseInputDense(3, activation="relu", bias_initializer="random_normal")
    plain = keras.layers.Dense(3, activation="relu")
    layer.build((None, 50))
    plain.build((None, 50))
    plain.set_weights(layer.get_weights())
    sparse = tf.sparse.from_dense(words)
    with tf.GradientTape(persistent=True) as tape:
        ours, theirs = layer(sparse), plain(tf.constant(words))
        loss_ours, loss_theirs = tf.reduce_sum(ours ** 2), tf.reduce_sum(theirs ** 2)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.numpy()[2], np.maximum(layer.bias.numpy(), 0), atol=1e-7)
    kernel_gradient = tape.gradient(loss_ours, layer.kernel.value)
    assert isinstance(kernel_gradient, tf.IndexedSlices)  # rows of the words present only
    np.testing.assert_allclose(tf.convert_to_tensor(kernel_gradient).numpy(),
                               tape.gradient(loss_theirs, plain.kernel.value).numpy(),
                               rtol=1e-5, atol=1e-6)
    # the traced call gathers from the kernel's handle and never reads the whole kernel
    graph = tf.function(layer).get_concrete_function(
        tf.SparseTensorSpec([None, 50], tf.float32)).graph
    (kernel_handle,) = [inside for outside, inside in graph.captures
                        if outside is layer.kernel.value.handle]
    readers = {op.type for op in graph.get_operations()
               if any(tensor is kernel_handle for tensor in op.inputs)}
    assert readers == {"ResourceGather"}
    # it saves and loads as itself
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is SparseInputDense and restored.units == 3
