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


def crop_views(image, squares, size):
  """uint8 [K, size, size, C] bilinear resamples of `image` inside `squares`.

  Outside the image is black, as in the training views.
  """
  image = np.asarray(image)
  squares = np.asarray(squares, np.float64).reshape(-1, 4)
  views = np.zeros((len(squares), size, size) + image.shape[2:], np.uint8)
  for view, (x0, y0, x1, _) in zip(views, squares):
    s = (x1 - x0) / size
    # OpenCV puts pixel centres at integers: corner coordinates minus 0.5.
    view_to_image = np.array([[s, 0.0, x0 + 0.5 * s - 0.5],
                              [0.0, s, y0 + 0.5 * s - 0.5]])
    cv2.warpAffine(image, view_to_image, (size, size), dst=view,
                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  return views


def from_views(points, squares):
  """Normalised view landmarks [K, 68, 2] -> image corner coordinates."""
  faces = [geometry.from_crop(p, s, 1.0) for p, s in zip(points, squares)]
  return np.array(faces).reshape(len(squares), geometry.NUM_LANDMARKS, 2)
