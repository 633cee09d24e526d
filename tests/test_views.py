"""pipeline/views.py: where a view samples the image."""

import numpy as np

from facelandmark import geometry
from facelandmark import views


def test_crop_views_samples_at_view_pixel_centres():
  # Red = 2x and green = 2y at pixel centres: bilinear sampling of a linear
  # ramp is exact, so each view pixel shows where it was sampled.
  height, width = 90, 120
  ys, xs = np.mgrid[0:height, 0:width] + 0.5
  image = np.stack([2 * xs, 2 * ys, np.zeros_like(xs)], -1).astype(np.uint8)
  square = np.array([10.3, 20.7, 60.3, 70.7])
  size = 25
  (view,) = views.crop_views(image, [square], size)
  diagonal = np.repeat(np.arange(size)[:, None] + 0.5, 2, axis=1)
  centres = geometry.from_crop(diagonal, square, size)  # (x, y) of (u, u)
  np.testing.assert_allclose(view[0, :, 0], 2 * centres[:, 0], atol=0.6)
  np.testing.assert_allclose(view[:, 0, 1], 2 * centres[:, 1], atol=0.6)


def test_crop_views_is_black_outside_the_image():
  image = np.full((40, 40, 3), 200, np.uint8)
  (view,) = views.crop_views(image, [[-40, -40, 40, 40]], 16)
  assert view[:7, :7].max() == 0 and view[9:, 9:].min() == 200
