"""The network's view of a face, in numpy (per image, OpenCV): the square
around a face box, the crop, and the way back to image coordinates. Training
builds the same views in TensorFlow (pipeline/views.py) on this geometry.

A view is the square geometry.square_around(box, view_scale) resampled to
`size` pixels; the network returns points in it normalised to [0, 1]. View
pixel (u, v) samples the image at corner coordinates
(x0 + (u + 0.5) * s, y0 + (v + 0.5) * s), s = side / size (geometry.py).
"""

import cv2
import numpy as np

from facelandmark import geometry


def view_squares(boxes, view_scale):
  """[K, 4] face boxes -> [K, 4] view squares (geometry.square_around each)."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  return np.array([geometry.square_around(b, view_scale) for b in boxes]
                  ).reshape(-1, 4)


# Training views are bilinear resamples of crops that prepare area-downscaled
# so the face box is 96 px (--image_size 192 / --crop_context 2): one to one
# and a half crop pixels per view pixel at 112 px. Serving cuts views the same
# way through an image pyramid: the face's surroundings are box-averaged by the
# largest power of two that leaves at least one pixel per view pixel, then
# resampled bilinearly. Without it a 400 px face is sampled every 4 pixels,
# aliased in a way training never showed. Levels are aligned to the image's
# pixel grid, so a photo and its exact 2^n reduction give the same views.


def pyramid_factor(step):
  """The pyramid level (a power of two) for `step` image pixels per view pixel."""
  return 2 ** max(0, int(np.floor(np.log2(max(step, 1.0)))))


def crop_views(image, squares, size):
  """uint8 [K, size, size, C] resamples of `image` inside `squares`, each cut
  from its pyramid level (see pyramid_factor).

  Outside the image is black, as in the training views.
  """
  image = np.asarray(image)
  squares = np.asarray(squares, np.float64).reshape(-1, 4)
  views = np.zeros((len(squares), size, size) + image.shape[2:], np.uint8)
  for view, square in zip(views, squares):
    source, (x0, y0, x1, _) = _pyramid_level(image, square, size)
    s = (x1 - x0) / size
    # OpenCV puts pixel centres at integers: corner coordinates minus 0.5.
    view_to_image = np.array([[s, 0.0, x0 + 0.5 * s - 0.5],
                              [0.0, s, y0 + 0.5 * s - 0.5]])
    cv2.warpAffine(source, view_to_image, (size, size), dst=view,
                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  return views


# Level pixels to spare around a square: room for the bilinear taps.
LEVEL_MARGIN = 2


def _level_window(square, k):
  """(left, top, side): a square patch of the image around `square`, aligned
  to multiples of k, with LEVEL_MARGIN level pixels to spare each way."""
  left = (int(np.floor(square[0])) // k - LEVEL_MARGIN) * k
  top = (int(np.floor(square[1])) // k - LEVEL_MARGIN) * k
  right = (int(np.ceil(square[2])) // k + LEVEL_MARGIN + 1) * k
  bottom = (int(np.ceil(square[3])) // k + LEVEL_MARGIN + 1) * k
  return left, top, max(right - left, bottom - top)


def _pyramid_level(image, square, size):
  """(image, square) on the square's pyramid level: the surroundings cut
  (black outside the image) and box-averaged k x k, the square moved along."""
  k = pyramid_factor((square[2] - square[0]) / size)
  if k == 1:
    return image, square
  left, top, side = _level_window(square, k)
  patch = np.zeros((side, side) + image.shape[2:], image.dtype)
  h, w = image.shape[:2]
  ix0, iy0 = min(max(left, 0), w), min(max(top, 0), h)
  ix1, iy1 = min(max(left + side, 0), w), min(max(top + side, 0), h)
  patch[iy0 - top:iy1 - top, ix0 - left:ix1 - left] = image[iy0:iy1, ix0:ix1]
  # INTER_AREA at an integer factor is the exact k x k mean.
  level = cv2.resize(patch, (side // k, side // k), interpolation=cv2.INTER_AREA)
  if level.ndim < patch.ndim:  # cv2 drops a single channel axis.
    level = level[..., None]
  return level, (np.asarray(square) - [left, top, left, top]) / k


def from_views(points, squares):
  """Normalised view landmarks [K, 68, 2] -> image corner coordinates."""
  faces = [geometry.from_crop(p, s, 1.0) for p, s in zip(points, squares)]
  return np.array(faces).reshape(len(squares), geometry.NUM_LANDMARKS, 2)
