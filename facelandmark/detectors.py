"""Face detectors: BGR frame -> Detections(boxes [K, 4], scores [K]).

Boxes are [x0, y0, x1, y1] in corner coordinates: pixel (i, j) covers
[i, i+1) x [j, j+1) (geometry.py).

`blazeface` is MediaPipe's short-range BlazeFace, bundled (blazeface.py):
webcams, portraits; the default for video and camera. `blazeface_full` is
its full-range model: small faces in group photos, about 3 times slower.
`blazeface_both` runs both and keeps the union (`combine`): the default for
photos (bench/bench_crowds.py). `haar` is OpenCV's
frontal-face cascade (shipped inside OpenCV 4); `full_frame` takes each whole
frame as the face box (videos or photos already cropped to one face). `haar`
and `full_frame` have no confidence: their scores are 1.

The box statistics at the end describe how a detector frames faces compared
with the tight landmark boxes the landmarker trains on.
"""

import os
import threading
from typing import NamedTuple

import cv2
import numpy as np

from facelandmark import blazeface
from facelandmark.errors import WebcamError

DETECTORS = ('auto', 'blazeface', 'blazeface_full', 'blazeface_both', 'haar',
             'full_frame')
# 'auto': by source (`for_source`). Photos hold crowds and small faces; the
# short-range model finds webcam faces as well at a third of the cost.
PHOTO_DETECTOR = 'blazeface_both'
VIDEO_DETECTOR = 'blazeface'
DEFAULT_DETECTOR = 'auto'
# The smallest face each BlazeFace found on the AFW group photos, as a share
# of the photo's shorter side (bench/bench_crowds.py; haar's is its
# `min_face`): smaller faces may be missed. full_frame's box is the frame.
MIN_FACE_FOUND = {'blazeface': 0.10, 'blazeface_full': 0.05,
                  'blazeface_both': 0.05, 'haar': 0.10, 'full_frame': None}
HAAR_CASCADE = 'haarcascade_frontalface_default.xml'
# A detection is the face whose tight landmark box it overlaps by this IoU.
MATCH_IOU = 0.3


class Detections(NamedTuple):
  boxes: np.ndarray   # [K, 4] float64 [x0, y0, x1, y1], corner coordinates
  scores: np.ndarray  # [K] float64 in [0, 1]


def blazeface_detector(model='short', min_face=0.0, num_threads=None):
  """BlazeFace on BGR frames; `min_face`: BlazeFace's (a share of the
  frame's shorter side)."""
  detector = blazeface.BlazeFace(model, min_face=min_face,
                                 num_threads=num_threads)

  def detect(frame):
    faces = detector.detect(frame, bgr=True)
    return Detections(faces.boxes, faces.scores)

  return detect


# In a combination, short-range boxes smaller than this share of the image's
# shorter side are left to the full-range model: small faces are its
# strength, and there the short-range model draws boxes over neighbours.
# Large faces are the short-range model's: the full-range one misses 4 of
# 100 HELEN portraits (faces 0.3 to 0.7 of the shorter side). On AFW: 0 or
# 0.15 keep one more face and one more merged box, 16 more other detections.
SHORT_RANGE_MIN = 0.25


def combine(short, full, image_side, iou=blazeface.NMS_IOU,
            short_min=SHORT_RANGE_MIN):
  """The union of two Detections on an image whose shorter side is
  `image_side`: `full`'s, then each of `short`'s at least `short_min` of
  that side that overlaps none of them by `iou` and holds no two of their
  centres (one box over neighbours)."""
  kept_boxes, kept_scores = [full.boxes], [full.scores]
  centres = (full.boxes[:, :2] + full.boxes[:, 2:]) / 2
  overlaps = blazeface.pairwise_iou(short.boxes, full.boxes)
  sides = np.sqrt(np.prod(short.boxes[:, 2:] - short.boxes[:, :2], axis=1))
  for box, score, overlap, side in zip(short.boxes, short.scores, overlaps,
                                       sides):
    inside = np.all((centres >= box[:2]) & (centres <= box[2:]), axis=1)
    if (side >= short_min * image_side and not np.any(overlap >= iou) and
        inside.sum() < 2):
      kept_boxes.append(box[None])
      kept_scores.append([score])
  return Detections(np.concatenate(kept_boxes).reshape(-1, 4),
                    np.concatenate(kept_scores).astype(np.float64))


def combined_detector(num_threads=None):
  short = blazeface_detector('short', num_threads=num_threads)
  full = blazeface_detector('full', num_threads=num_threads)
  return lambda frame: combine(short(frame), full(frame), min(frame.shape[:2]))


def for_source(name, kind):
  """The detector `name` means for a source of `kind` ('image', 'folder',
  'video', 'camera'): 'auto' is PHOTO_DETECTOR or VIDEO_DETECTOR."""
  if name != 'auto':
    return name
  return VIDEO_DETECTOR if kind in ('video', 'camera') else PHOTO_DETECTOR


def haar_detector(min_face=0.1):
  """Haar cascade detector; skips faces smaller than `min_face` of the frame's
  shorter side."""
  folder = getattr(getattr(cv2, 'data', None), 'haarcascades', '')
  path = os.path.join(folder, HAAR_CASCADE)
  if not hasattr(cv2, 'CascadeClassifier') or not os.path.isfile(path):
    raise WebcamError(
        f'OpenCV {cv2.__version__} has no Haar cascade ({HAAR_CASCADE}); '
        'OpenCV 5 moved cascades out of its main package. Install OpenCV 4 '
        '(pip install "opencv-python-headless<5", or "opencv-python<5" for a '
        'window) or use --detector=blazeface.')
  cascade = cv2.CascadeClassifier(path)
  # OpenCV does not promise one cascade may run in several threads at once.
  lock = threading.Lock()

  def detect(frame):
    grey = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    side = max(1, int(min_face * min(grey.shape)))
    with lock:
      found = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5,
                                       minSize=(side, side))
    # (x, y, w, h) in whole pixels: pixel x covers [x, x+1), so the box is
    # [x, x + w) in corner coordinates.
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in found],
                     np.float64).reshape(-1, 4)
    return Detections(boxes, np.ones(len(boxes)))

  return detect


def full_frame_detector(frame):
  height, width = frame.shape[:2]
  return Detections(np.array([[0.0, 0.0, width, height]]), np.ones(1))


def make_detector(name, num_threads=None):
  """The detector called `name` (DETECTORS): BGR frame -> Detections.

  `num_threads`: the TF Lite interpreter's, for BlazeFace (None: its
  default).
  """
  if name == 'blazeface':
    return blazeface_detector('short', num_threads=num_threads)
  if name == 'blazeface_full':
    return blazeface_detector('full', num_threads=num_threads)
  if name == 'blazeface_both':
    return combined_detector(num_threads)
  if name == 'haar':
    return haar_detector()
  if name == 'full_frame':
    return full_frame_detector
  raise WebcamError(f'--detector must be one of {DETECTORS} (auto: by source, '
                    f'for_source), got {name!r}')


def left_to_right(detections):
  """Detections sorted by box centre x: a stable face order for smoothing."""
  boxes, scores = detections
  order = np.argsort(boxes[:, 0] + boxes[:, 2], kind='stable')
  return Detections(boxes[order], scores[order])


# Detector boxes against landmark boxes.


def match(detected, annotated, min_iou=MATCH_IOU):
  """Index into `detected` [D, 4] of each `annotated` box [A, 4], or -1.

  One to one, greedily by IoU: the best-overlapping pair first, then the best
  of the rest, down to `min_iou`.
  """
  iou = blazeface.pairwise_iou(np.reshape(annotated, (-1, 4)),
                               np.reshape(detected, (-1, 4)))
  matches = np.full(len(iou), -1)
  while iou.size and iou.max() >= min_iou:
    a, d = np.unravel_index(np.argmax(iou), iou.shape)
    matches[a] = d
    iou[a, :], iou[:, d] = -1, -1
  return matches


def box_offsets(detected, landmark_boxes):
  """How each detected box [M, 4] frames its face's landmark box [M, 4].

  Returns [M, 4]: the centre offset (detected - landmark) in x and y over the
  landmark box size sqrt(w * h), then log(detected w / landmark w) and
  log(detected h / landmark h).
  """
  detected = np.reshape(detected, (-1, 4)).astype(np.float64)
  truth = np.reshape(landmark_boxes, (-1, 4)).astype(np.float64)
  sizes = truth[:, 2:] - truth[:, :2]
  centre = ((detected[:, :2] + detected[:, 2:]) -
            (truth[:, :2] + truth[:, 2:])) / 2
  return np.concatenate([
      centre / np.sqrt(np.prod(sizes, axis=1, keepdims=True)),
      np.log((detected[:, 2:] - detected[:, :2]) / sizes)], axis=1)


BOX_STATISTICS = ('x', 'y', 'log_w', 'log_h')


def box_statistics(detected, landmark_boxes):
  """{name: (mean, std)} of box_offsets over matched faces, for BOX_STATISTICS
  'x', 'y' (centre offset / landmark box size) and 'log_w', 'log_h' (log size
  ratios): what a landmarker must tolerate to run on this detector's boxes.
  NaN for no faces."""
  offsets = box_offsets(detected, landmark_boxes)
  if not len(offsets):
    return {name: (np.nan, np.nan) for name in BOX_STATISTICS}
  return {name: (float(np.mean(column)), float(np.std(column)))
          for name, column in zip(BOX_STATISTICS, offsets.T)}
