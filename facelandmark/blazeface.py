"""BlazeFace: MediaPipe's face detectors (models/), run with TF Lite.

  detector = BlazeFace('short')       # 'full': small faces, group photos
  faces = detector.detect(rgb_image)  # .boxes [K, 4], .scores [K],
                                      # .keypoints [K, 6, 2], best first
  faces = detector.detect(bgr_frame, bgr=True)  # OpenCV frames

Images are RGB, like the Landmarker's; `bgr=True` takes OpenCV's BGR (or
BGRA). Grey, RGBA, uint16 and float in [0, 1] are read as
`landmarker.as_rgb_uint8` reads them. Everything returned is in image corner
coordinates: pixel (i, j) covers [i, i+1) x [j, j+1) (geometry.py).

The image is resized so its longer side fills the model's square input and
padded with black, centred (MediaPipe's keep-aspect letterbox), then the
model's raw output goes through MediaPipe's face detection graph
(mediapipe/modules/face_detection/face_detection*.pbtxt), re-implemented here in
numpy: SSD anchors, box and keypoint decoding, weighted non-maximum
suppression. Fed MediaPipe's own input, it gives mediapipe 0.10.14's boxes and
scores.
"""

import dataclasses
import itertools
import math
import os
from typing import NamedTuple

import cv2
import numpy as np

from facelandmark import landmarker
from facelandmark import tflite



@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """The options of one model's MediaPipe graph that differ between models."""
  file: str                  # in landmarker.MODELS_DIR
  input_size: int            # the square input's side, pixels
  strides: tuple             # one per anchor layer
  interpolated_scale_aspect_ratio: float  # > 0: one more anchor per layer
  min_score: float           # min_score_thresh


MODELS = {
    # face_detection_short_range.pbtxt: faces within about 2 m (webcams).
    'short': ModelSpec('face_detection_short_range.tflite', 128,
                       (8, 16, 16, 16), 1.0, 0.5),
    # face_detection_full_range.pbtxt: faces up to about 5 m, group photos.
    'full': ModelSpec('face_detection_full_range_sparse.tflite', 192, (4,),
                      0.0, 0.6),
}
# Shared by both graphs (face_detection.pbtxt). Its anchors have
# fixed_anchor_size: every anchor is 1 x 1 (the whole input), so min_scale and
# max_scale never matter; aspect_ratios (one: 1.0) only count anchors.
ANCHOR_OFFSET = 0.5
NUM_ASPECT_RATIOS = 1
SCORE_CLIPPING = 100.0
NMS_IOU = 0.3
# MediaPipe's FaceKeyPoint order; right and left are the person's own.
KEYPOINTS = ('right_eye', 'left_eye', 'nose_tip', 'mouth_centre',
             'right_ear_tragion', 'left_ear_tragion')
# cv2.resize takes these as they are; others are converted at full size first.
_RESIZABLE = (np.uint8, np.uint16, np.float32, np.float64)


class Faces(NamedTuple):
  boxes: np.ndarray      # [K, 4] float64 [x0, y0, x1, y1], corner coordinates
  scores: np.ndarray     # [K] float64 in (0, 1], highest first
  keypoints: np.ndarray  # [K, 6, 2] float64 (x, y), in KEYPOINTS order


# MediaPipe's calculators, as pure functions.


def ssd_anchors(input_size, strides, interpolated_scale_aspect_ratio,
                offset=ANCHOR_OFFSET):
  """Anchor centres [N, 2] (x, y) in [0, 1], in the model's output order.

  SsdAnchorsCalculator: consecutive layers with the same stride share one
  feature map of ceil(input_size / stride) cells a side; each cell has, per
  layer, one anchor per aspect ratio plus one for the interpolated scale.
  Rows of cells, then cells, then the anchors of a cell.
  """
  per_layer = NUM_ASPECT_RATIOS + (interpolated_scale_aspect_ratio > 0)
  centres = []
  for stride, layers in itertools.groupby(strides):
    side = math.ceil(input_size / stride)
    y, x = np.mgrid[:side, :side]
    cells = (np.stack([x, y], axis=-1).reshape(-1, 2) + offset) / side
    centres.append(np.repeat(cells, per_layer * len(list(layers)), axis=0))
  return np.concatenate(centres)


def sigmoid_scores(raw, clipping=SCORE_CLIPPING):
  """Raw scores [N] or [N, 1] -> face probabilities [N] (float64)."""
  raw = np.clip(np.asarray(raw, np.float64).reshape(-1), -clipping, clipping)
  return 1 / (1 + np.exp(-raw))


def decode(raw, anchors, input_size):
  """Raw regressors [N, 16] -> (boxes [N, 4], keypoints [N, 6, 2]) in [0, 1].

  TensorsToDetectionsCalculator with reverse_output_order: each row is the
  box centre (x, y) and size (w, h), then six keypoints (x, y), in input
  pixels relative to the anchor centre. Anchors are 1 x 1 (fixed_anchor_size),
  so the box size is not scaled by them. Boxes are [x0, y0, x1, y1].
  """
  pairs = np.asarray(raw, np.float64).reshape(len(anchors), -1, 2) / input_size
  centre, half = pairs[:, 0] + anchors, pairs[:, 1] / 2
  boxes = np.concatenate([centre - half, centre + half], axis=1)
  return boxes, pairs[:, 2:] + anchors[:, None]


def pairwise_iou(a, b):
  """Intersection over union [A, B] of boxes a [A, 4] and b [B, 4].

  Boxes that do not intersect, or have no area, overlap 0.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  low = np.maximum(a[:, None, :2], b[None, :, :2])
  high = np.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = np.prod(np.clip(high - low, 0, None), axis=-1)
  area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=-1)
  area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=-1)
  union = area_a[:, None] + area_b[None] - inter
  return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def weighted_nms(boxes, scores, keypoints, threshold=NMS_IOU):
  """MediaPipe's WEIGHTED non-maximum suppression -> (boxes, scores, keypoints).

  Best score first, each remaining detection takes every remaining one that
  overlaps it by IoU > `threshold` (itself included) and becomes their
  score-weighted mean box and keypoints, keeping its own score. Blending the
  neighbours' boxes steadies them from frame to frame.
  """
  order = np.argsort(-scores, kind='stable')
  merged = []
  while len(order):
    top = order[0]
    cluster = pairwise_iou(boxes[top:top + 1], boxes[order])[0] > threshold
    cluster[0] = True  # Itself, even with no area (IoU 0).
    members = order[cluster]
    weights = scores[members] / scores[members].sum()
    merged.append((weights @ boxes[members], scores[top],
                   np.tensordot(weights, keypoints[members], axes=1)))
    order = order[~cluster]
  return (np.array([m[0] for m in merged]).reshape(-1, 4),
          np.array([m[1] for m in merged], np.float64),
          np.array([m[2] for m in merged]).reshape(
              -1, *keypoints.shape[1:]))


# The letterbox: image <-> the model's square input.


@dataclasses.dataclass(frozen=True)
class Letterbox:
  """Where an image lies in the square input, in corner coordinates.

  The image is resized to `size` (w, h) pixels with its top-left corner at
  `offset` (x, y): a pure scale and shift per axis. Rounding `size` to whole
  pixels can make the x and y scales differ slightly; each is exact.
  """
  scale: np.ndarray   # [2] input pixels per image pixel, x and y
  offset: np.ndarray  # [2] the resized image's top-left corner in the input
  size: tuple         # (w, h) of the resized image, pixels

  def to_input(self, points):
    """Image points [..., 2] -> input points."""
    return np.asarray(points, np.float64) * self.scale + self.offset

  def to_image(self, points):
    """Input points [..., 2] -> image points."""
    return (np.asarray(points, np.float64) - self.offset) / self.scale


def letterbox(height, width, input_size):
  """The Letterbox of a `height` x `width` image in an `input_size` square:
  longer side filling it, shorter one centred (padding split evenly, the odd
  pixel after)."""
  fit = input_size / max(height, width)
  size = (max(1, round(width * fit)), max(1, round(height * fit)))
  offset = np.array([(input_size - size[0]) // 2, (input_size - size[1]) // 2],
                    np.float64)
  return Letterbox(np.array(size, np.float64) / [width, height], offset, size)


def _resizable(image):
  """`image` as cv2.resize takes it: common inputs as they are (a huge photo
  is shrunk before any copy), others through as_rgb_uint8, which also raises
  its clear ValueError on bad shapes and dtypes."""
  image = np.asarray(image)
  if image.ndim in (2, 3) and image.size and image.dtype in _RESIZABLE:
    return image
  return landmarker.as_rgb_uint8(image)


def input_tensor(image, box, input_size, bgr=False):
  """The model's input [1, S, S, 3] float32 in [-1, 1] (RGB) for `image`
  placed by `box` (a Letterbox); padding is black (-1).

  MediaPipe point-samples a bilinear warp whose pixel grid is off by half a
  pixel; area averaging on the corner-coordinate grid keeps big photos from
  aliasing and boxes where the face is. It moves boxes by a few percent of the
  face size from MediaPipe's (with its warp, they match to 0.1 px).
  """
  shrink = box.size[0] < image.shape[1] or box.size[1] < image.shape[0]
  small = cv2.resize(image, box.size, interpolation=(
      cv2.INTER_AREA if shrink else cv2.INTER_LINEAR))
  pixels = landmarker.as_rgb_uint8(small)
  if bgr:
    pixels = pixels[..., ::-1]
  tensor = np.full((1, input_size, input_size, 3), -1, np.float32)
  (x0, y0), (w, h) = box.offset.astype(int), box.size
  tensor[0, y0:y0 + h, x0:x0 + w] = pixels / np.float32(127.5) - 1
  return tensor


# The detector.


class BlazeFace:
  """Faces in images, with the bundled BlazeFace models.

  Attributes:
    spec: the model's ModelSpec.
    min_score: detections scoring below this are dropped.
    min_face: faces whose box size sqrt(w * h) is below this share of the
      image's shorter side are dropped (0: none; the model has its own limit).
  """

  def __init__(self, model='short', min_score=None, min_face=0.0,
               num_threads=None):
    """`model`: 'short' or 'full' (MODELS); `min_score` None: the model's
    MediaPipe threshold (0.5 short, 0.6 full); `num_threads`: the TF Lite
    interpreter's (None: its default)."""
    if model not in MODELS:
      raise ValueError(f'BlazeFace model must be one of {tuple(MODELS)}, got '
                       f'{model!r}')
    self.spec = MODELS[model]
    self.min_score = self.spec.min_score if min_score is None else min_score
    self.min_face = min_face
    if not 0 <= self.min_score <= 1:
      raise ValueError(f'min_score must be in [0, 1], got {self.min_score}')
    if not 0 <= min_face < 1:
      raise ValueError(f'min_face must be in [0, 1), got {min_face}')
    self._anchors = ssd_anchors(self.spec.input_size, self.spec.strides,
                                self.spec.interpolated_scale_aspect_ratio)
    # One interpreter per thread (tflite.py): detect may run in several.
    self._model = tflite.Model(
        os.path.join(landmarker.MODELS_DIR, self.spec.file), num_threads)
    self._input = self._model.inputs[0]['index']
    # Told apart by shape: the two files name them differently.
    outputs = {d['shape'][-1]: d for d in self._model.outputs}
    if (sorted(outputs) != [1, 16] or
        outputs[16]['shape'][1] != len(self._anchors)):
      shapes = [d['shape'].tolist() for d in outputs.values()]
      raise ValueError(f'{self.spec.file}: outputs {shapes} are not '
                       f'{len(self._anchors)} BlazeFace detections')
    self._regressors = outputs[16]['index']
    self._classificators = outputs[1]['index']

  def detect(self, image, bgr=False):
    """Faces in `image` [H, W] or [H, W, C] (RGB; BGR if `bgr`) -> Faces."""
    image = _resizable(image)
    height, width = image.shape[:2]
    size = self.spec.input_size
    box = letterbox(height, width, size)
    interpreter = self._model.interpreter()
    interpreter.set_tensor(self._input, input_tensor(image, box, size, bgr))
    interpreter.invoke()
    scores = sigmoid_scores(interpreter.get_tensor(self._classificators)[0])
    boxes, keypoints = decode(interpreter.get_tensor(self._regressors)[0],
                              self._anchors, size)
    # Boxes without area frame no face (and a Landmarker refuses them); NaN
    # compares False, so it goes too.
    keep = ((scores >= self.min_score) & (boxes[:, 2] > boxes[:, 0]) &
            (boxes[:, 3] > boxes[:, 1]))
    boxes, scores, keypoints = weighted_nms(boxes[keep], scores[keep],
                                            keypoints[keep])
    boxes = box.to_image(boxes.reshape(-1, 2, 2) * size).reshape(-1, 4)
    keypoints = box.to_image(keypoints * size)
    sides = np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1))
    big = sides >= self.min_face * min(height, width)
    return Faces(boxes[big], scores[big], keypoints[big])

