"""Face detectors: BGR frame -> [K, 4] boxes in corner coordinates.

`haar` is OpenCV's frontal-face cascade (shipped inside OpenCV 4);
`full_frame` takes each whole frame as the face box (videos or photos already
cropped to one face, or faces no cascade finds).
"""

import os

import cv2
import numpy as np

from live.errors import WebcamError

DETECTORS = ('haar', 'full_frame')
HAAR_CASCADE = 'haarcascade_frontalface_default.xml'


def haar_detector(min_face=0.1):
  """Haar cascade detector; skips faces smaller than `min_face` of the frame."""
  folder = getattr(getattr(cv2, 'data', None), 'haarcascades', '')
  path = os.path.join(folder, HAAR_CASCADE)
  if not hasattr(cv2, 'CascadeClassifier') or not os.path.isfile(path):
    raise WebcamError(
        f'OpenCV {cv2.__version__} has no Haar cascade ({HAAR_CASCADE}); '
        'OpenCV 5 moved cascades out of its main package. Install OpenCV 4 '
        '(pip install "opencv-python-headless<5", or "opencv-python<5" for a '
        'window) or use --detector=full_frame on face crops.')
  cascade = cv2.CascadeClassifier(path)

  def detect(frame):
    grey = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    side = max(1, int(min_face * min(grey.shape)))
    found = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5,
                                     minSize=(side, side))
    # (x, y, w, h) in whole pixels: pixel x covers [x, x+1), so the box is
    # [x, x + w) in corner coordinates.
    return np.array([[x, y, x + w, y + h] for x, y, w, h in found],
                    np.float64).reshape(-1, 4)

  return detect


def full_frame_detector(frame):
  height, width = frame.shape[:2]
  return np.array([[0.0, 0.0, width, height]])


def make_detector(name):
  if name == 'haar':
    return haar_detector()
  if name == 'full_frame':
    return full_frame_detector
  raise WebcamError(f'--detector must be one of {DETECTORS}, got {name!r}')


def left_to_right(boxes):
  """Boxes sorted by centre x: a stable face order for smoothing."""
  return boxes[np.argsort(boxes[:, 0] + boxes[:, 2], kind='stable')]
