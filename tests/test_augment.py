"""Augmentation: images and landmarks move together, flips re-index, seeds."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from pipeline import augment
from facelandmark import geometry

PERMUTATION = np.array(geometry.MIRROR_PERMUTATION)
STORED = 160
SPACING = 12.0
# Only geometry: colour jitter would blur the dot codes.
NO_COLOUR = dict(brightness=0.0, contrast=0.0, saturation=0.0)
STILL = augment.AugmentConfig(max_rotation=0.0, min_scale=1.0, max_scale=1.0,
                              max_shift=0.0, flip=False, **NO_COLOUR)


def _symmetric_template():
  """68 points in a grid, mirror-symmetric like a frontal face.

  Mirror pairs sit left (lower index, so 36 is left of 45 as in iBUG) and
  right of the vertical centre line, the self-mirrored points on it.
  """
  points = np.zeros([68, 2])
  on_line = [k for k in range(68) if PERMUTATION[k] == k]
  left = [k for k in range(68) if k < PERMUTATION[k]]
  for row, k in enumerate(on_line):
    points[k] = [0, row]
  for slot, k in enumerate(left):
    row, column = divmod(slot, 3)
    points[k] = [-(column + 1), row]
    points[PERMUTATION[k]] = [column + 1, row]
  points[:, 1] -= (len(on_line) - 1) / 2
  return (points * SPACING + STORED / 2).astype(np.float32)


def _dot_image(points, sigma=1.5):
  """A Gaussian dot per point: red its weight, green the weight * (k + 1) / 68.

  Green over red near a dot is the dot's code, whatever the resampling.
  """
  centres = np.arange(STORED) + 0.5  # Corner coordinates of pixel centres.
  x, y = np.meshgrid(centres, centres)
  dots = np.exp(-((x[None] - points[:, 0, None, None])**2 +
                  (y[None] - points[:, 1, None, None])**2) / (2 * sigma**2))
  codes = np.arange(1, 69)[:, None, None] / 68
  image = np.stack([dots.sum(0), (dots * codes).sum(0), np.zeros_like(x)], -1)
  return np.round(255 * image).astype(np.uint8)


def _batch(points, batch):
  box = geometry.landmark_box(points).astype(np.float32)
  return (np.repeat(_dot_image(points)[None], batch, 0),
          np.repeat(points[None], batch, 0), np.repeat(box[None], batch, 0))


def _dot_at(view, point, radius=3.5):
  """Centroid and code of the dot around `point` (view corner coordinates)."""
  centres = np.arange(view.shape[0]) + 0.5
  x, y = np.meshgrid(centres, centres)
  near = (x - point[0])**2 + (y - point[1])**2 < radius**2
  weight = view[..., 0] * near
  total = weight.sum()
  centroid = np.array([(weight * x).sum(), (weight * y).sum()]) / total
  code = (view[..., 1] * near).sum() / total * 68 - 1
  return centroid, int(np.round(code))


def _orientation(points, a, b, c):
  """Sign of the turn a -> b -> c, per image ([B, 68, 2] points)."""
  ab, ac = points[:, b] - points[:, a], points[:, c] - points[:, a]
  return np.sign(ab[:, 0] * ac[:, 1] - ab[:, 1] * ac[:, 0])


def test_flip_permutation_is_an_involution():
  assert sorted(PERMUTATION) == list(range(68))
  np.testing.assert_array_equal(PERMUTATION[PERMUTATION], np.arange(68))


def test_augmented_landmarks_sit_on_their_dots():
  size, batch = 128, 8
  points = _symmetric_template()
  config = augment.AugmentConfig(max_rotation=90.0, min_scale=0.7,
                                 max_scale=1.0, max_shift=0.1, flip=True,
                                 **NO_COLOUR)
  views, targets = augment.augment(*_batch(points, batch), tf.constant([1, 2]),
                                   size, 1.25, config)
  views, targets = views.numpy(), targets.numpy() * size
  flipped = []
  for view, target in zip(views, targets):
    codes = {}
    for k, point in enumerate(target):
      if not (4 < point).all() or not (point < size - 4).all():
        continue  # Cut by the border.
      centroid, codes[k] = _dot_at(view, point)
      np.testing.assert_allclose(centroid, point, atol=0.2)
    assert len(codes) > 40
    ks = np.array(list(codes))
    # Each landmark lands on its own dot, or on its mirror twin's if flipped.
    flipped.append(all(codes[k] == PERMUTATION[k] for k in ks))
    assert flipped[-1] or all(codes[k] == k for k in ks)
  assert any(flipped) and not all(flipped)
  # Re-indexing undoes the mirror's change of handedness: 36, 45, 8 (eye,
  # eye, chin) turn the same way in every view.
  assert (_orientation(targets, 36, 45, 8) ==
          _orientation(points[None], 36, 45, 8)).all()


def test_flip_swaps_sides_and_reindexes():
  size, batch = 96, 16
  points = _symmetric_template()
  images, landmarks, boxes = _batch(points, batch)
  config = dataclasses.replace(STILL, flip=True)
  views, targets = augment.augment(images, landmarks, boxes,
                                   tf.constant([0, 1]), size, 1.25, config)
  still, still_targets = augment.center_view(images, landmarks, boxes, size,
                                             1.25)
  # The template is symmetric, so flipped or not the landmarks agree.
  np.testing.assert_allclose(targets, still_targets, atol=1e-5)
  assert (targets[:, 36, 0] < targets[:, 45, 0]).numpy().all()
  mirrored = [np.allclose(v, still[0, :, ::-1], atol=1e-5) for v in views]
  assert any(mirrored) and not all(mirrored)
  for view, is_mirrored, target in zip(views.numpy(), mirrored,
                                       targets.numpy() * size):
    if not is_mirrored:
      np.testing.assert_allclose(view, still[0], atol=1e-5)
    # After a flip, 36 is the point that was 45.
    assert _dot_at(view, target[36])[1] == (45 if is_mirrored else 36)


def test_center_view_follows_the_geometry():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, [2, 128, 128, 3], np.uint8)
  landmarks = rng.uniform(0, 128, [2, 68, 2]).astype(np.float32)
  landmarks[:, 0] = [64, 64]  # The box centre.
  boxes = np.array([[40, 40, 88, 88], [30, 46, 98, 82]], np.float32)
  views, targets = augment.center_view(images, landmarks, boxes, 64, 4 / 3)
  for box, points, target in zip(boxes, landmarks, targets.numpy()):
    square = geometry.square_around(box, 4 / 3)
    np.testing.assert_allclose(
        target, geometry.to_crop(points, square, 64) / 64, atol=1e-6)
    np.testing.assert_allclose(target[0], [0.5, 0.5], atol=1e-7)
  # The first view is the crop's [32, 96) square pixel for pixel.
  np.testing.assert_allclose(views[0] * 255, images[0, 32:96, 32:96], atol=1e-3)


def test_colour_jitter_keeps_grey_grey_and_in_range():
  images = np.full([8, 64, 64, 3], 128, np.uint8)
  boxes = np.tile([[16.0, 16.0, 48.0, 48.0]], [8, 1])
  config = dataclasses.replace(STILL, brightness=0.2, contrast=0.3,
                               saturation=0.3)
  views, _ = augment.augment(images, np.zeros([8, 68, 2]), boxes,
                             tf.constant([5, 6]), 32, 1.25, config)
  levels = views.numpy().reshape(8, -1)
  # Contrast and saturation leave a flat grey alone; brightness shifts it.
  np.testing.assert_allclose(
      levels, np.broadcast_to(levels[:, :1], levels.shape), atol=1e-5)
  assert (np.abs(levels[:, 0] - 128 / 255) <= 0.2 + 1e-6).all()
  assert len(set(levels[:, 0].round(4))) == 8


def _scaling(changed, base):
  """Least-squares factor, per image, taking `base` to `changed`."""
  return ((changed * base).sum(axis=(1, 2, 3)) /
          (base * base).sum(axis=(1, 2, 3)))[:, None, None, None]


def test_contrast_and_saturation_scale_about_mean_and_grey():
  rng = np.random.default_rng(2)
  # Mid-range colours, so that no factor in [0.7, 1.3] reaches the clipping.
  images = rng.integers(64, 192, [4, 64, 64, 3], np.uint8)
  boxes = np.tile([[16.0, 16.0, 48.0, 48.0]], [4, 1])
  args = (images, np.zeros([4, 68, 2]), boxes, tf.constant([9, 9]), 40, 1.25)
  base = augment.center_view(*args[:3], 40, 1.25)[0].numpy()
  contrast = augment.augment(
      *args, dataclasses.replace(STILL, contrast=0.3))[0].numpy()
  means = base.mean(axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(contrast.mean(axis=(1, 2), keepdims=True), means,
                             atol=1e-5)
  factors = _scaling(contrast - means, base - means)
  np.testing.assert_allclose(contrast - means, factors * (base - means),
                             atol=1e-5)
  assert (np.abs(factors - 1) <= 0.3).all() and np.ptp(factors) > 0.01
  saturated = augment.augment(
      *args, dataclasses.replace(STILL, saturation=0.3))[0].numpy()
  greys = (base * [0.299, 0.587, 0.114]).sum(axis=3, keepdims=True)
  np.testing.assert_allclose((saturated * [0.299, 0.587, 0.114]).sum(axis=3),
                             greys[..., 0], atol=1e-5)
  factors = _scaling(saturated - greys, base - greys)
  np.testing.assert_allclose(saturated - greys, factors * (base - greys),
                             atol=1e-5)
  assert (np.abs(factors - 1) <= 0.3).all() and np.ptp(factors) > 0.01


def test_occlusion_paints_one_rectangle():
  images = np.full([16, 64, 64, 3], 255, np.uint8)
  boxes = np.tile([[16.0, 16.0, 48.0, 48.0]], [16, 1])
  config = dataclasses.replace(STILL, occlusion=1.0)
  views, _ = augment.augment(images, np.zeros([16, 68, 2]), boxes,
                             tf.constant([7, 8]), 40, 1.25, config)
  painted = 0
  for view in views.numpy():
    changed = (view != 1.0).any(axis=2)
    if not changed.any():
      continue  # Thinner than a pixel or off the view.
    painted += 1
    rows, columns = np.nonzero(changed)
    block = view[rows.min():rows.max() + 1, columns.min():columns.max() + 1]
    assert changed.sum() == block.shape[0] * block.shape[1]
    assert (block == block[0, 0]).all()
    assert max(block.shape[:2]) <= augment.MAX_OCCLUSION_SIDE * 40 + 1
  assert painted >= 12
  untouched, _ = augment.augment(images, np.zeros([16, 68, 2]), boxes,
                                 tf.constant([7, 8]), 40, 1.25, STILL)
  assert (untouched.numpy() == 1.0).all()


def test_greyscale_gamma_and_blur_do_what_they_say():
  rng = np.random.default_rng(4)
  images = rng.integers(40, 216, [16, 64, 64, 3], np.uint8)
  boxes = np.tile([[16.0, 16.0, 48.0, 48.0]], [16, 1])
  landmarks = rng.uniform(20, 44, [16, 68, 2])
  args = (images, landmarks, boxes, tf.constant([3, 4]), 40, 1.25)
  base, base_points = augment.center_view(*args[:3], 40, 1.25)
  base = base.numpy()

  grey, points = augment.augment(*args, dataclasses.replace(STILL, greyscale=1.0))
  np.testing.assert_allclose(points, base_points, atol=1e-6)
  np.testing.assert_allclose(grey.numpy()[..., 0], grey.numpy()[..., 2], atol=1e-6)
  np.testing.assert_allclose(grey.numpy()[..., 0],
                             (base * [0.299, 0.587, 0.114]).sum(-1), atol=1e-5)

  gamma = augment.augment(*args, dataclasses.replace(STILL, gamma=0.5))[0].numpy()
  # One exponent per image, within [1 / 1.5, 1.5], and not all the same.
  inside = (base > 0.05) & (base < 0.95)
  exponents = [np.median(np.log(g[m]) / np.log(b[m]))
               for g, b, m in zip(gamma, base, inside)]
  np.testing.assert_allclose(gamma, base ** np.reshape(exponents, [-1, 1, 1, 1]),
                             atol=1e-4)
  assert min(exponents) >= 1 / 1.5 - 1e-4 and max(exponents) <= 1.5 + 1e-4
  assert np.ptp(exponents) > 0.1

  dot = np.zeros([4, 64, 64, 3], np.uint8)
  dot[:, 32, 32] = 255
  blurred = augment.augment(dot, np.zeros([4, 68, 2]), boxes[:4],
                            tf.constant([5, 5]), 64, 1.0,
                            dataclasses.replace(STILL, blur=1.0))[0].numpy()
  sharp = augment.center_view(dot, np.zeros([4, 68, 2]), boxes[:4], 64,
                              1.0)[0].numpy()
  # The same light, spread symmetrically around the same place.
  np.testing.assert_allclose(blurred.sum(axis=(1, 2)), sharp.sum(axis=(1, 2)),
                             rtol=1e-4)
  assert (blurred.max(axis=(1, 2, 3)) < sharp.max(axis=(1, 2, 3))).all()
  def centroids(views):
    mass = views[..., 0]
    rows, columns = np.mgrid[:64, :64]
    return np.stack([(mass * rows).sum((1, 2)), (mass * columns).sum((1, 2))],
                    -1) / mass.sum((1, 2))[:, None]
  np.testing.assert_allclose(centroids(blurred), centroids(sharp), atol=1e-3)


def test_stateless_seeds_in_a_traced_function_with_dynamic_batch():
  config = augment.AugmentConfig(occlusion=0.5)

  @tf.function(input_signature=[
      tf.TensorSpec([None, 48, 48, 3], tf.uint8),
      tf.TensorSpec([None, 68, 2], tf.float32),
      tf.TensorSpec([None, 4], tf.float32),
      tf.TensorSpec([2], tf.int64)])
  def run(images, landmarks, boxes, seed):
    return augment.augment(images, landmarks, boxes, seed, 32, 1.25, config)

  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, [5, 48, 48, 3], np.uint8)
  landmarks = rng.uniform(12, 36, [5, 68, 2]).astype(np.float32)
  boxes = np.stack([geometry.landmark_box(p) for p in landmarks]).astype(
      np.float32)
  seed = tf.constant([11, 2], tf.int64)
  first, second = run(images, landmarks, boxes, seed), run(images, landmarks,
                                                           boxes, seed)
  other = run(images, landmarks, boxes, tf.constant([11, 3], tf.int64))
  for a, b, c in zip(first, second, other):
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
  assert first[0].shape == [5, 32, 32, 3] and first[1].shape == [5, 68, 2]
  assert 0 <= first[0].numpy().min() and first[0].numpy().max() <= 1
  three = run(images[:3], landmarks[:3], boxes[:3], seed)
  assert three[0].shape == [3, 32, 32, 3] and three[1].shape == [3, 68, 2]


@pytest.mark.parametrize('changes', [dict(min_scale=0.0), dict(min_scale=1.2),
                                     dict(occlusion=1.5), dict(contrast=-0.1),
                                     dict(greyscale=2.0), dict(blur=-0.1),
                                     dict(gamma=-0.5)])
def test_bad_config_is_rejected(changes):
  with pytest.raises(ValueError):
    augment.AugmentConfig(**changes)


def test_view_to_crop_parameters_mean_what_they_say():
  size, box = 100, [20.0, 30.0, 60.0, 50.0]  # Centre (40, 40), longer side 40.
  matrix = augment.view_to_crop(
      tf.constant([box]), size, 1.25, angles=tf.constant([np.pi / 2]),
      scales=tf.constant([0.5]), shifts=tf.constant([[0.1, -0.2]]),
      flips=tf.constant([True]))[0].numpy()
  # The face centre moved by the shift; 10 view pixels span 10 * 50 / (0.5 *
  # 100) crop pixels, rotated a quarter turn, then mirrored.
  moved = np.array([60.0, 30.0, 1.0])
  np.testing.assert_allclose(matrix @ moved, [40, 40, 1], atol=1e-5)
  np.testing.assert_allclose(matrix @ (moved + [10, 0, 0]), [40, 50, 1],
                             atol=1e-5)
  np.testing.assert_allclose(matrix @ (moved + [0, 10, 0]), [50, 40, 1],
                             atol=1e-5)


def test_detector_like_boxes_follow_the_given_statistics():
  config = augment.AugmentConfig(
      box_jitter=0.5, box_shift_mean=(0.1, -0.05), box_shift_std=(0.05, 0.02),
      box_log_scale_mean=(0.2, -0.1), box_log_scale_std=(0.05, 0.08))
  rng = np.random.default_rng(0)
  corners = rng.uniform(0, 100, (4000, 2))
  boxes = np.concatenate([corners, corners + rng.uniform(20, 60, (4000, 2))],
                         axis=1).astype(np.float32)
  got = augment.detector_like_boxes(boxes, tf.constant([1, 2]), config).numpy()
  changed = np.any(got != boxes, axis=1)
  assert 0.45 < changed.mean() < 0.55
  got, boxes = got[changed].astype(np.float64), boxes[changed]
  sides = boxes[:, 2:] - boxes[:, :2]
  size = np.sqrt(sides.prod(axis=1, keepdims=True))
  shift = ((got[:, :2] + got[:, 2:]) - (boxes[:, :2] + boxes[:, 2:])) / 2 / size
  log_scale = np.log((got[:, 2:] - got[:, :2]) / sides)
  np.testing.assert_allclose(shift.mean(0), [0.1, -0.05], atol=0.005)
  np.testing.assert_allclose(shift.std(0), [0.05, 0.02], atol=0.005)
  np.testing.assert_allclose(log_scale.mean(0), [0.2, -0.1], atol=0.005)
  np.testing.assert_allclose(log_scale.std(0), [0.05, 0.08], atol=0.005)
  # The same seed, the same boxes: a resumed run repeats them.
  np.testing.assert_array_equal(
      augment.detector_like_boxes(boxes, tf.constant([1, 2]), config),
      augment.detector_like_boxes(boxes, tf.constant([1, 2]), config))


def test_box_statistics_are_checked():
  with pytest.raises(ValueError, match='box_jitter'):
    augment.AugmentConfig(box_jitter=1.5)
  with pytest.raises(ValueError, match='two values'):
    augment.AugmentConfig(box_shift_mean=(0.1,))
