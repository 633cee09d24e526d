"""Pixel-in-pixel regression (PIPNet, Jin et al., IJCV 2021): the neighbour
structure, the in-graph decoding and the training loss.

On the stride-16 feature map (H x W cells) the head predicts, for each landmark,
a score per cell, the landmark's (x, y) offset within its cell and the offsets
of its NUM_NEIGHBOURS nearest neighbours in the mean shape from that cell. A
landmark's position is its best cell plus its offset, averaged with the votes
that its neighbours' best cells cast for it. Decoding is argmax, one-hot
gathers and one matrix product: it runs in the exported graph and in TF Lite,
so a PIPNet model still maps views to [B, 68, 2] coordinates.

Map layout (channels of the head's output, float32):
  [0, K) scores, [K, 2K) x offsets, [2K, 3K) y offsets,
  [3K, 3K + KN) neighbour x offsets (landmark-major), then neighbour y offsets,
with K = 68 landmarks and N = NUM_NEIGHBOURS. Offsets are in cells.
"""

import keras
import numpy as np
import tensorflow as tf

from facelandmark import geometry
from facelandmark import head_pose

NUM_NEIGHBOURS = 10
# PIPNet's weights for 300-W: score maps (MSE) against offsets (L1).
SCORE_WEIGHT = 10.0
OFFSET_WEIGHT = 1.0
K = geometry.NUM_LANDMARKS


def num_channels(num_neighbours=NUM_NEIGHBOURS):
  return K * (3 + 2 * num_neighbours)


def mean_shape():
  """[68, 2] frontal mean face: the head-pose model seen from the front."""
  return head_pose.MODEL_POINTS[:, :2]


def neighbours(shape=None, num_neighbours=NUM_NEIGHBOURS):
  """[68, N] indices of each landmark's nearest others in `shape`."""
  shape = mean_shape() if shape is None else np.asarray(shape)
  distances = np.linalg.norm(shape[:, None] - shape[None], axis=-1)
  np.fill_diagonal(distances, np.inf)
  return np.argsort(distances, axis=1, kind='stable')[:, :num_neighbours]


def merge_matrix(neighbour_index):
  """[K + K*N, K]: averages each landmark's own prediction with every vote
  cast for it (votes ordered landmark-major, as in the maps)."""
  k, n = neighbour_index.shape
  merge = np.zeros((k + k * n, k), np.float32)
  merge[np.arange(k), np.arange(k)] = 1.0
  merge[k + np.arange(k * n), neighbour_index.reshape(-1)] = 1.0
  return merge / merge.sum(axis=0, keepdims=True)


def split_maps(maps, num_neighbours=NUM_NEIGHBOURS):
  """[B, H, W, C] -> scores, x, y [B, H*W, K]; neighbour x, y [B, H*W, K, N]."""
  h, w = maps.shape[1], maps.shape[2]
  flat = keras.ops.reshape(maps, (-1, h * w, maps.shape[3]))
  scores, x, y = (flat[..., i * K:(i + 1) * K] for i in range(3))
  nb = K * num_neighbours
  nb_x = keras.ops.reshape(flat[..., 3 * K:3 * K + nb],
                           (-1, h * w, K, num_neighbours))
  nb_y = keras.ops.reshape(flat[..., 3 * K + nb:], (-1, h * w, K, num_neighbours))
  return scores, x, y, nb_x, nb_y


class PIPDecode(keras.layers.Layer):
  """PIPNet maps [B, H, W, C] -> landmarks [B, 2K] normalised to the view."""

  def __init__(self, num_neighbours=NUM_NEIGHBOURS, **kwargs):
    super().__init__(**kwargs)
    self.num_neighbours = num_neighbours
    self._merge = merge_matrix(neighbours(num_neighbours=num_neighbours))

  def get_config(self):
    return {**super().get_config(), 'num_neighbours': self.num_neighbours}

  def call(self, maps):
    h, w = maps.shape[1], maps.shape[2]
    scores, x, y, nb_x, nb_y = split_maps(maps, self.num_neighbours)
    # tf.argmax and a one-hot by comparison: keras.ops.argmax and one_hot
    # lower to a BitwiseAnd that TF Lite lacks.
    best = tf.argmax(scores, axis=1, output_type=tf.int32)  # [B, K] cells.
    cells = keras.ops.arange(h * w, dtype='int32')
    pick = keras.ops.cast(
        keras.ops.equal(cells[None, :, None], best[:, None, :]), 'float32')
    # Integer division: float16 TF Lite folds a float `/ w` into `* (1 / w)`,
    # whose rounding puts cell 7 of a 7-wide map in row 0, column 7.
    cell_y = keras.ops.cast(best // w, 'float32')
    cell_x = keras.ops.cast(best % w, 'float32')

    def gather(values):  # [B, HW, K(, N)] at each landmark's best cell.
      if len(values.shape) == 4:
        return keras.ops.sum(pick[..., None] * values, axis=1)
      return keras.ops.sum(pick * values, axis=1)

    def merged(cell_xy, own, votes, side):
      own = (cell_xy + gather(own)) / side
      votes = (cell_xy[..., None] + gather(votes)) / side
      every = keras.ops.concatenate(
          [own, keras.ops.reshape(votes, (-1, K * self.num_neighbours))], -1)
      return keras.ops.matmul(every, keras.ops.convert_to_tensor(self._merge))

    px = merged(cell_x, x, nb_x, w)
    py = merged(cell_y, y, nb_y, h)
    return keras.ops.reshape(keras.ops.stack([px, py], axis=-1), (-1, 2 * K))


def loss(true, maps, num_neighbours=NUM_NEIGHBOURS):
  """Per-face PIPNet loss [B]: MSE of the scores against a one-hot map of the
  true cell, plus L1 of own and neighbour offsets read at the true cell.

  true: [B, K, 2] landmarks normalised to the view; maps: the head's output.
  """
  maps = tf.cast(maps, tf.float32)
  h, w = maps.shape[1], maps.shape[2]
  scores, x, y, nb_x, nb_y = split_maps(maps, num_neighbours)
  true = tf.cast(true, tf.float32)
  grid = true * tf.constant([w, h], tf.float32)
  cells = tf.clip_by_value(tf.floor(grid), 0.0, tf.constant([w - 1.0, h - 1.0]))
  offsets = grid - cells  # [B, K, 2], in cells.
  index = tf.cast(cells[..., 1] * w + cells[..., 0], tf.int32)  # [B, K]
  pick = tf.transpose(tf.one_hot(index, h * w), (0, 2, 1))  # [B, HW, K]
  score_loss = tf.reduce_mean(tf.square(scores - pick), axis=[1, 2])

  at_true = lambda v: tf.reduce_sum(pick * v, axis=1)  # [B, K]
  own = (tf.abs(at_true(x) - offsets[..., 0]) +
         tf.abs(at_true(y) - offsets[..., 1]))
  # Neighbour j of landmark i, seen from i's true cell.
  index_nb = neighbours(num_neighbours=num_neighbours)
  nb_true = tf.gather(grid, index_nb, axis=1) - cells[:, :, None, :]
  at_true_nb = lambda v: tf.reduce_sum(pick[..., None] * v, axis=1)
  nb = (tf.abs(at_true_nb(nb_x) - nb_true[..., 0]) +
        tf.abs(at_true_nb(nb_y) - nb_true[..., 1]))
  offset_loss = tf.reduce_mean(own, axis=1) + tf.reduce_mean(nb, axis=[1, 2])
  return SCORE_WEIGHT * score_loss + OFFSET_WEIGHT * offset_loss
