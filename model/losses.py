"""Per-face landmark losses, selectable by name.

Every loss takes true landmarks [B, 68, 2] in normalised view coordinates and
the network's training output (predicted landmarks, or the pip head's maps for
'pip') and returns a per-face loss [B]. Wing and Adaptive Wing have
thresholds in pixels, so they see the error in pixels of `pixel_scale`-sized
view (the input size).
"""

import math

import tensorflow as tf

from model import pip

# 'pip' is PIPNet's loss on the pip head's maps (model/pip.py); the others
# compare coordinates.
LOSSES = ('mse', 'l1', 'smooth_l1', 'wing', 'adaptive_wing', 'pip')


def _per_face(values):
  return tf.reduce_mean(tf.reshape(values, [tf.shape(values)[0], -1]), axis=-1)


def mse(error):
  return _per_face(tf.square(error))


def l1(error):
  return _per_face(tf.abs(error))


def smooth_l1(error, beta=1.0):
  """Huber-style: quadratic below `beta` pixels, linear above."""
  x = tf.abs(error)
  return _per_face(tf.where(x < beta, 0.5 * x * x / beta, x - 0.5 * beta))


def wing(error, w=10.0, epsilon=2.0):
  """Wing loss (Feng et al., CVPR 2018): log near zero, L1 far away."""
  x = tf.abs(error)
  c = w - w * math.log(1.0 + w / epsilon)
  return _per_face(tf.where(x < w, w * tf.math.log1p(x / epsilon), x - c))


def adaptive_wing(error, omega=14.0, theta=0.5, epsilon=1.0, alpha=2.1,
                  target=0.0):
  """Adaptive Wing loss (Wang et al., ICCV 2019).

  Written for heatmaps, where the exponent is alpha - y for a heatmap value y;
  for coordinate regression y is the constant `target` (0: the loss is smooth
  at zero error and linear far away).
  """
  x = tf.abs(error)
  power = alpha - target
  ratio = theta / epsilon
  a = (omega * (1.0 / (1.0 + ratio**power)) * power * ratio**(power - 1.0) /
       epsilon)
  c = theta * a - omega * math.log(1.0 + ratio**power)
  return _per_face(tf.where(x < theta, omega * tf.math.log1p((x / epsilon)**power),
                            a * x - c))


def get_loss(name, pixel_scale):
  """A function (true, predicted) -> per-face loss [B] for `--loss`=name.

  MSE and L1 work on normalised coordinates, as the prototype's MSE did; the
  others on pixel errors, where their thresholds are defined.
  """
  if name not in LOSSES:
    raise ValueError(f'--loss must be one of {LOSSES}, got {name!r}')
  if name == 'pip':
    return pip.loss
  fn = {'mse': mse, 'l1': l1, 'smooth_l1': smooth_l1, 'wing': wing,
        'adaptive_wing': adaptive_wing}[name]
  scale = 1.0 if name in ('mse', 'l1') else float(pixel_scale)

  def loss(true, predicted):
    error = (tf.cast(predicted, tf.float32) - tf.cast(true, tf.float32)) * scale
    return fn(error)

  return loss
