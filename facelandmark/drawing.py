"""Landmarks drawn on images: TensorBoard faces, evaluation overlays, webcam.

Points are corner coordinates (geometry.py); OpenCV draws at pixel centres
with 4 bits of sub-pixel precision, so points land where they are, not on the
nearest pixel.
"""

import cv2
import numpy as np

GREEN, RED = (0, 255, 0), (255, 0, 0)  # RGB; reverse for BGR images.
SHIFT = 4  # OpenCV fixed-point fraction bits.


def cv_point(xy):
  """Corner coordinates -> OpenCV fixed-point pixel-centre coordinates."""
  return tuple(int(round((v - 0.5) * (1 << SHIFT))) for v in xy)


def draw_points(canvas, points, colour, radius):
  """Filled dots at [N, 2] `points` on `canvas`, in place."""
  for point in np.asarray(points, np.float64):
    cv2.circle(canvas, cv_point(point), int(radius * (1 << SHIFT)), colour,
               -1, cv2.LINE_AA, SHIFT)
  return canvas


def draw_box(canvas, box, colour, thickness=1):
  """A rectangle of `thickness` pixels on corner-coordinate `box`, in
  place."""
  cv2.rectangle(canvas, cv_point(box[:2]), cv_point(box[2:]), colour,
                int(thickness), cv2.LINE_AA, SHIFT)
  return canvas


def draw_landmarks(image, true, predicted):
  """RGB uint8 copy of a square view with its true (green) and predicted (red)
  points, both normalised to the view ([0, 1])."""
  canvas = np.ascontiguousarray(image).copy()
  size = canvas.shape[0]
  radius = max(1.0, size / 112)
  for points, colour in ((true, GREEN), (predicted, RED)):
    draw_points(canvas, np.asarray(points) * size, colour, radius)
  return canvas
