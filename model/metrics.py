"""NME and the curves built on it: the one definition every caller uses."""

import numpy as np
import tensorflow as tf

from facelandmark import geometry

NORMALIZATIONS = ('outer_eye', 'pupil')


def normalizing_distance(landmarks, normalization='outer_eye'):
  """Per-face distance NME divides by: [..., 68, 2] -> [...]."""
  landmarks = tf.convert_to_tensor(landmarks, tf.float32)
  if normalization == 'outer_eye':
    a = landmarks[..., geometry.LEFT_EYE_OUTER, :]
    b = landmarks[..., geometry.RIGHT_EYE_OUTER, :]
  elif normalization == 'pupil':
    a = tf.reduce_mean(tf.gather(landmarks, geometry.LEFT_EYE, axis=-2), -2)
    b = tf.reduce_mean(tf.gather(landmarks, geometry.RIGHT_EYE, axis=-2), -2)
  else:
    raise ValueError(f'normalization must be one of {NORMALIZATIONS}, got '
                     f'{normalization!r}')
  return tf.norm(a - b, axis=-1)


def nme(predicted, true, normalization='outer_eye'):
  """Per-face mean point-to-point error over the normalizing distance.

  Both [..., 68, 2] in the same (isotropic) coordinates; returns [...].
  """
  predicted = tf.convert_to_tensor(predicted, tf.float32)
  true = tf.convert_to_tensor(true, tf.float32)
  errors = tf.reduce_mean(tf.norm(predicted - true, axis=-1), axis=-1)
  return errors / normalizing_distance(true, normalization)


def ced(errors, threshold, num=1000):
  """Cumulative error distribution: (x, fraction of faces with error <= x)."""
  errors = np.sort(np.asarray(errors, np.float64))
  x = np.linspace(0.0, threshold, num)
  return x, np.searchsorted(errors, x, side='right') / max(len(errors), 1)


def auc(errors, threshold):
  """Area under the CED up to `threshold`, divided by `threshold` (in [0, 1])."""
  x, y = ced(errors, threshold)
  return float(np.trapezoid(y, x) / threshold)


def failure_rate(errors, threshold):
  """Fraction of faces whose NME exceeds `threshold`."""
  errors = np.asarray(errors, np.float64)
  return float(np.mean(errors > threshold)) if errors.size else float('nan')
