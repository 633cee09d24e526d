"""Batched, in-graph augmentation: the model's square view of each stored crop.

The model sees a square *view* of the stored crop, centred on the face box, of
side `view_scale * max(box w, h)` (views.view_squares_tf), resampled to
`input_size` pixels. Its targets are the landmarks in that view divided by
`input_size`: [0, 1] inside the view, corner coordinates (see geometry.py).

Augmentation perturbs the view (flip, rotation, scale, shift) through one affine
matrix per image: the matrix warps the image and its inverse moves the
landmarks, so the two agree by construction. Everything is batched tensor work
driven by stateless random ops, so it runs inside the compiled train step (on
the accelerator), for any batch size, and a resumed run repeats it exactly.
"""

import dataclasses
import math

import tensorflow as tf

from facelandmark import geometry
from pipeline import views

# Occluding rectangles are up to this fraction of the view side, each way.
MAX_OCCLUSION_SIDE = 0.4
# Blur kernels span this many pixels each way; sigma is drawn up to MAX_BLUR_SIGMA.
BLUR_RADIUS = 3
MAX_BLUR_SIGMA = 1.5
# ITU-R BT.601 luma weights, as tf.image.rgb_to_grayscale uses.
_LUMA = (0.299, 0.587, 0.114)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Ranges of the random perturbations; each image draws its own values."""
  max_rotation: float = 45.0  # Degrees, either way.
  min_scale: float = 0.7  # The face shrinks to `scale` of its size in the view.
  max_scale: float = 1.0
  max_shift: float = 0.05  # The face moves up to this fraction of the view.
  flip: bool = True  # Mirrors half of the images.
  brightness: float = 0.2  # Adds a value in [-b, b].
  contrast: float = 0.3  # Scales about the image mean by [1 - c, 1 + c].
  saturation: float = 0.3  # Scales about the grey level by [1 - s, 1 + s].
  occlusion: float = 0.0  # Probability of one rectangle of random colour.
  greyscale: float = 0.0  # Probability of a grey view.
  gamma: float = 0.0  # Pixel ** g, log g uniform in [-log(1 + gamma), +].
  blur: float = 0.0  # Probability of a Gaussian blur, sigma in (0, MAX].
  # Detector-like face boxes: with probability `box_jitter` an image's view is
  # built on a box drawn around its box the way a face detector's boxes lie
  # around the tight landmark box: centre offset (x, y) in units of the box
  # size sqrt(w * h), and log(detector side / box side) for (w, h), each
  # normal with these means and deviations (live/detectors.box_statistics
  # measures them).
  box_jitter: float = 0.0
  box_shift_mean: tuple = (0.0, 0.0)
  box_shift_std: tuple = (0.0, 0.0)
  box_log_scale_mean: tuple = (0.0, 0.0)
  box_log_scale_std: tuple = (0.0, 0.0)

  def __post_init__(self):
    if not 0 < self.min_scale <= self.max_scale:
      raise ValueError(f'need 0 < min_scale <= max_scale, got {self.min_scale}'
                       f' and {self.max_scale}')
    if min(self.max_rotation, self.max_shift, self.brightness, self.contrast,
           self.saturation) < 0:
      raise ValueError(f'augmentation ranges must not be negative: {self}')
    for name in ('occlusion', 'greyscale', 'blur'):
      if not 0 <= getattr(self, name) <= 1:
        raise ValueError(f'{name} is a probability, got {getattr(self, name)}')
    if self.gamma < 0:
      raise ValueError(f'gamma must not be negative, got {self.gamma}')
    if not 0 <= self.box_jitter <= 1:
      raise ValueError(f'box_jitter is a probability, got {self.box_jitter}')
    pairs = (self.box_shift_mean, self.box_shift_std, self.box_log_scale_mean,
             self.box_log_scale_std)
    if any(len(p) != 2 for p in pairs):
      raise ValueError('box_shift_* and box_log_scale_* take two values (x, '
                       f'y or w, h), got {pairs}')
    if min(self.box_shift_std + self.box_log_scale_std) < 0:
      raise ValueError('box deviations must not be negative')


def view_to_crop(boxes, input_size, view_scale, angles, scales, shifts, flips):
  """Affine maps [B, 3, 3] from view corner coordinates to stored-crop ones.

  With identity parameters (angle 0, scale 1, shift 0, no flip) the view is
  views.view_squares(box, view_scale) resized to `input_size`. Otherwise the
  view is mirrored about its vertical centre line, rotated by `angles`, zoomed
  out by 1 / `scales` and the face moved by `shifts` (a fraction of the view).

  Args:
    boxes: float [B, 4] face boxes [x0, y0, x1, y1] in the stored crop.
    input_size: the view's side in pixels.
    view_scale: the view's side over the box's longer side.
    angles: float [B] rotations in radians.
    scales: float [B] face sizes relative to the unaugmented view.
    shifts: float [B, 2] face displacements (x, y), fractions of the view side.
    flips: bool [B] mirror or not.
  """
  squares = views.view_squares_tf(tf.cast(boxes, tf.float32), view_scale)
  centres = (squares[:, :2] + squares[:, 2:]) / 2
  sides = squares[:, 2] - squares[:, 0]
  zoom = sides / (scales * input_size)  # Crop pixels per view pixel.
  cos, sin = tf.cos(angles) * zoom, tf.sin(angles) * zoom
  mirror = tf.where(flips, -1.0, 1.0)
  # crop = centre + zoom * Mirror @ Rotation @ (view - view point of the centre)
  linear = tf.stack([tf.stack([mirror * cos, -mirror * sin], axis=1),
                     tf.stack([sin, cos], axis=1)], axis=1)
  origins = (0.5 + shifts) * input_size
  offsets = centres - tf.linalg.matvec(linear, origins)
  top = tf.concat([linear, offsets[:, :, None]], axis=2)
  bottom = tf.broadcast_to(tf.constant([[[0.0, 0.0, 1.0]]]),
                           [tf.shape(boxes)[0], 1, 3])
  return tf.concat([top, bottom], axis=1)


def center_view(images, landmarks, boxes, input_size, view_scale):
  """The unaugmented view: images in [0, 1] and normalised landmarks.

  Args:
    images: uint8 [B, S, S, 3] stored crops.
    landmarks: float [B, 68, 2] in the crops' corner coordinates.
    boxes: float [B, 4] face boxes in the crops.
    input_size: the view's side in pixels.
    view_scale: the view's side over the box's longer side.

  Returns:
    float32 images [B, input_size, input_size, 3] and landmarks [B, 68, 2].
  """
  batch = tf.shape(images)[0]
  return _view(images, landmarks, boxes, input_size, view_scale,
               angles=tf.zeros([batch]), scales=tf.ones([batch]),
               shifts=tf.zeros([batch, 2]), flips=tf.zeros([batch], tf.bool))


def augment(images, landmarks, boxes, seed, input_size, view_scale, config):
  """A randomly perturbed view per image; center_view's arguments and results.

  `seed` is an int32/int64 [2] tensor: the same seed gives the same output, so
  callers derive it from (run seed, step) and fold in the replica id.
  """
  batch = tf.shape(images)[0]
  geometry_seed, colour_seed, occlusion_seed, box_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=4))
  if config.box_jitter > 0:
    boxes = detector_like_boxes(boxes, box_seed, config)
  u = tf.random.stateless_uniform([batch, 5], geometry_seed)
  views, targets = _view(
      images, landmarks, boxes, input_size, view_scale,
      angles=math.radians(config.max_rotation) * (2 * u[:, 0] - 1),
      scales=config.min_scale + (config.max_scale - config.min_scale) * u[:, 1],
      shifts=config.max_shift * (2 * u[:, 2:4] - 1),
      flips=u[:, 4] < (0.5 if config.flip else 0.0))
  views = _jitter_colour(
      views, tf.random.stateless_uniform([batch, 3], colour_seed), config)
  if config.greyscale or config.gamma or config.blur:
    # Its own stream, so that runs without these repeat older runs exactly.
    views = _degrade(views, tf.random.stateless_uniform(
        [batch, 4], tf.random.experimental.stateless_fold_in(seed, 4)), config)
  if config.occlusion > 0:
    views = _occlude(views, tf.random.stateless_uniform([batch, 9],
                                                        occlusion_seed),
                     config.occlusion)
  return views, targets


def detector_like_boxes(boxes, seed, config):
  """[B, 4] boxes, each replaced with probability config.box_jitter by one
  drawn the way a face detector's box lies around it (AugmentConfig)."""
  boxes = tf.cast(boxes, tf.float32)
  batch = tf.shape(boxes)[0]
  normal_seed, coin_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=2))
  z = tf.random.stateless_normal([batch, 4], normal_seed)
  sides = boxes[:, 2:] - boxes[:, :2]
  size = tf.sqrt(tf.reduce_prod(sides, axis=1, keepdims=True))
  centres = (boxes[:, :2] + boxes[:, 2:]) / 2 + size * (
      tf.constant(config.box_shift_mean) +
      tf.constant(config.box_shift_std) * z[:, :2])
  half = sides / 2 * tf.exp(tf.constant(config.box_log_scale_mean) +
                            tf.constant(config.box_log_scale_std) * z[:, 2:])
  jittered = tf.concat([centres - half, centres + half], axis=1)
  coin = tf.random.stateless_uniform([batch, 1], coin_seed) < config.box_jitter
  return tf.where(coin, jittered, boxes)


def _view(images, landmarks, boxes, input_size, view_scale, *, angles, scales,
          shifts, flips):
  matrices = view_to_crop(boxes, input_size, view_scale, angles, scales, shifts,
                          flips)
  views = _warp(tf.cast(images, tf.float32) / 255.0, matrices, input_size)
  return views, _move_landmarks(landmarks, matrices, flips, input_size)


def _warp(images, matrices, input_size):
  """Samples `images` at view pixels mapped through `matrices` (bilinear)."""
  # The op puts pixel centres at integers: conjugate by the half-pixel shift.
  to_corner = tf.constant([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
  to_centre = tf.constant([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
  matrices = to_centre @ matrices @ to_corner
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=tf.reshape(matrices, [-1, 9])[:, :8],
      output_shape=[input_size, input_size], fill_value=0.0,
      interpolation='BILINEAR', fill_mode='CONSTANT')


def _affine_inverse(matrices):
  """Closed-form inverse of [B, 3, 3] affine matrices. Unlike tf.linalg.inv it
  lets a NaN through instead of failing the step, so the train loop's NaN
  guard reports it."""
  a, b, tx = matrices[:, 0, 0], matrices[:, 0, 1], matrices[:, 0, 2]
  c, d, ty = matrices[:, 1, 0], matrices[:, 1, 1], matrices[:, 1, 2]
  det = a * d - b * c
  ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
  zeros, ones = tf.zeros_like(a), tf.ones_like(a)
  return tf.stack([
      tf.stack([ia, ib, -(ia * tx + ib * ty)], -1),
      tf.stack([ic, id_, -(ic * tx + id_ * ty)], -1),
      tf.stack([zeros, zeros, ones], -1)], axis=1)


def _move_landmarks(landmarks, matrices, flips, input_size):
  """Crop landmarks to normalised view ones, re-indexed where mirrored."""
  inverse = _affine_inverse(matrices)[:, None]
  landmarks = tf.cast(landmarks, tf.float32)
  points = (tf.linalg.matvec(inverse[..., :2, :2], landmarks)
            + inverse[..., :2, 2])
  mirrored = tf.gather(points, geometry.MIRROR_PERMUTATION, axis=1)
  points = tf.where(flips[:, None, None], mirrored, points)
  return points / input_size


def _jitter_colour(images, u, config):
  """Brightness, contrast and saturation from per-image U(0, 1) draws [B, 3].

  Brightness adds, contrast scales about each channel's mean and saturation
  about the grey level: all affine in colour, so they fold into one matrix and
  offset per image, and the pixels are touched once (twice as fast).
  """
  def spread(column, amount):
    return amount * (2 * u[:, column] - 1)

  brightness = spread(0, config.brightness)[:, None]
  contrast = 1 + spread(1, config.contrast)
  saturation = 1 + spread(2, config.saturation)[:, None, None]
  # Pixels are row vectors: pixel @ to_grey puts its grey level in each channel.
  to_grey = tf.broadcast_to(tf.constant(_LUMA)[:, None], [3, 3])
  saturate = saturation * tf.eye(3) + (1 - saturation) * to_grey
  means = tf.reduce_mean(images, axis=[1, 2])
  offsets = tf.linalg.matvec(saturate, (1 - contrast)[:, None] * means
                             + brightness, transpose_a=True)
  images = tf.einsum('bhwc,bcd->bhwd', images,
                     contrast[:, None, None] * saturate)
  return tf.clip_by_value(images + offsets[:, None, None, :], 0.0, 1.0)


def _degrade(images, u, config):
  """Greyscale, gamma and Gaussian blur from per-image U(0, 1) draws [B, 4]:
  grey or not, gamma, blur or not, blur sigma. Cameras and JPEGs degrade
  faces this way; PIPNet and STAR train with them."""
  grey = tf.reduce_sum(images * tf.constant(_LUMA), axis=-1, keepdims=True)
  images = tf.where((u[:, 0] < config.greyscale)[:, None, None, None],
                    tf.broadcast_to(grey, tf.shape(images)), images)
  if config.gamma > 0:
    log_gamma = math.log1p(config.gamma) * (2 * u[:, 1] - 1)
    images = tf.pow(images, tf.exp(log_gamma)[:, None, None, None])
  if config.blur > 0:
    sigma = tf.maximum(u[:, 3] * MAX_BLUR_SIGMA, 1e-3)
    x = tf.range(-BLUR_RADIUS, BLUR_RADIUS + 1, dtype=tf.float32)
    gauss = tf.exp(-tf.square(x)[None] / (2 * tf.square(sigma)[:, None]))
    delta = tf.cast(tf.equal(x, 0.0), tf.float32)[None]
    kernels = tf.where((u[:, 2] < config.blur)[:, None], gauss, delta)
    images = _separable_blur(images, kernels / tf.reduce_sum(
        kernels, axis=1, keepdims=True))
  return images


def _separable_blur(images, kernels):
  """Each image [B, H, W, C] convolved with its own 1-D kernel [B, 2R + 1]
  along x then y: the batch goes into channels of one depthwise convolution."""
  b, h, w, c = (tf.shape(images)[i] for i in range(4))
  stacked = tf.reshape(tf.transpose(images, [1, 2, 0, 3]), [1, h, w, b * c])
  taps = tf.repeat(kernels, c, axis=0)  # [B * C, 2R + 1]
  along_x = tf.transpose(taps)[None, :, :, None]  # [1, 2R + 1, B*C, 1]
  along_y = tf.transpose(taps)[:, None, :, None]
  for kernel in (along_x, along_y):
    stacked = tf.nn.depthwise_conv2d(stacked, kernel, [1, 1, 1, 1], 'SAME')
  return tf.transpose(tf.reshape(stacked, [h, w, b, c]), [2, 0, 1, 3])


def _occlude(images, u, probability):
  """One rectangle of random grey or colour per image, with `probability`.

  `u` holds per-image U(0, 1) draws [B, 9]: on/off, centre (2), size (2),
  grey or colour, colour (3).
  """
  side = tf.cast(tf.shape(images)[1], tf.float32)
  centres = u[:, 1:3] * side
  half_sides = u[:, 3:5] * (MAX_OCCLUSION_SIDE * side / 2)
  pixel_centres = tf.range(side) + 0.5
  inside = tf.abs(pixel_centres[None, None, :] - centres[:, :, None]) < (
      half_sides[:, :, None])  # [B, 2 (x, y), size]
  masks = (inside[:, 1, :, None] & inside[:, 0, None, :]
           & (u[:, 0] < probability)[:, None, None])
  colours = tf.where(u[:, 5:6] < 0.5, u[:, 6:7], u[:, 6:9])
  return tf.where(masks[..., None], colours[:, None, None, :], images)
