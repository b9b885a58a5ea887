"""Adam that updates only the rows a batch touched when a gradient is sparse.

The TF-IDF inputs' first-layer kernels are [vocabulary, units] (17,000 x 128 by
default) but a batch of products uses a few hundred of their rows. Keras' Adam
turns a sparse (``tf.IndexedSlices``) gradient dense and moves every row's moments
each step; ``LazyAdam`` (as TensorFlow Addons' ``LazyAdam`` and TF 1's sparse Adam
did) updates the moments and weights of the touched rows only — the usual choice
for sparse features: a row's moments decay only when its word is seen. Dense
gradients, and every gradient on backends without ``IndexedSlices`` (JAX), take
Keras' Adam unchanged.
"""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="prodcat")
class LazyAdam(keras.optimizers.Adam):
    def update_step(self, gradient, variable, learning_rate):
        if keras.backend.backend() != "tensorflow":
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        # one row per touched index (a word in several products sums its gradients)
        rows, position = tf.unique(gradient.indices)
        values = tf.math.unsorted_segment_sum(tf.cast(gradient.values, variable.dtype),
                                              position, tf.shape(rows)[0])
        step = ops.cast(self.iterations + 1, variable.dtype)
        alpha = ops.cast(learning_rate, variable.dtype) * ops.sqrt(
            1 - ops.power(ops.cast(self.beta_2, variable.dtype), step)) / (
            1 - ops.power(ops.cast(self.beta_1, variable.dtype), step))
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        # ``sparse_read`` gathers the rows from the variable itself: ``tf.gather`` would read
        # (copy) the whole [vocabulary, units] moment first, scattered variables being copied
        # on read
        m_rows = self.beta_1 * m.value.sparse_read(rows) + (1 - self.beta_1) * values
        v_rows = self.beta_2 * v.value.sparse_read(rows) + (1 - self.beta_2) * tf.square(values)
        self.assign(m, tf.IndexedSlices(m_rows, rows))
        self.assign(v, tf.IndexedSlices(v_rows, rows))
        self.assign_sub(variable, tf.IndexedSlices(
            alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))
