"""Face boxes to 68 landmarks in image pixels, with a TF Lite model.

The network sees a square view around each face box (views.py, with the
training `view_scale`), resampled to `input_size` pixels, and returns the
landmarks in that view normalised to [0, 1]. This module checks the image and
boxes, cuts the views, runs the model and maps its output back to image corner
coordinates. It runs TF Lite files only (tflite.py: LiteRT, else
tensorflow.lite); training, evaluation and export run SavedModels and Keras
nets through the same class (landmarker.py).

  landmarker = Landmarker.load()           # The shipped model.
  landmarker = Landmarker.load('export/')  # Fastest file scoring the same.
  landmarker = Landmarker.load('export/landmarks_int8.tflite', num_threads=2)
  points = landmarker.predict(rgb_image, boxes, refine=True)  # [K, 68, 2]

One Landmarker may be called from several threads at once (tflite.py).
"""

import json
import math
import os
from typing import Callable, Optional

import numpy as np

from facelandmark import geometry
from facelandmark import tflite
from facelandmark import views as views_lib

# The shipped model (README): float16 TF Lite, package data, with the
# metadata.json export.py wrote beside it.
MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          'models')
SHIPPED_MODEL = os.path.join(MODELS_DIR, 'landmarks_float16.tflite')
# Written by export.py beside the SavedModel and the .tflite files.
METADATA = 'metadata.json'
SAVED_MODEL_PB = 'saved_model.pb'
# The SavedModel's name in metadata['comparison']['files'].
SAVED_MODEL = 'saved_model'
# "Scores the same": an NME at most 1% (relative) above the SavedModel's on the
# export's comparison faces; the shipped int8 file is 0.5% above.
NME_TOLERANCE = 0.01
# A box side beyond this many times the image's larger side frames no face in
# the image: its view would be a dot of image in black.
MAX_BOX_SCALE = 100


def tflite_name(variant):
  return f'landmarks_{variant}.tflite'


# Fastest first: the network's median time per face on one x86 thread with
# XNNPACK, shipped 112 px net (int8 converted from it): int8 0.61 ms, float16
# 0.98, float32 0.98, SavedModel 3.6. float16 runs as float32 there; it comes
# first for its half-size file.
FASTEST_FIRST = tuple(tflite_name(v) for v in ('int8', 'float16', 'float32'))
# A folder none of whose files scored like the SavedModel: its most accurate.
MOST_ACCURATE_FIRST = FASTEST_FIRST[::-1]


# Images and boxes.


def as_rgb_uint8(image):
  """`image` as the uint8 RGB [H, W, 3] the views are cut from.

  uint8 RGB [H, W, 3] is native. Grey [H, W] or [H, W, 1] becomes three equal
  channels; RGBA [H, W, 4] loses alpha; uint16 is divided by 257 (65535 ->
  255); float images (any precision) must lie in [0, 1] and are multiplied by
  255. Any other dtype, shape or channel count, or an empty image, raises
  ValueError.
  """
  image = np.asarray(image)
  if image.ndim not in (2, 3):
    raise ValueError('image must be [H, W] (grey) or [H, W, C], got shape '
                     f'{image.shape}')
  if not image.size:
    raise ValueError(f'image is empty: shape {image.shape}')
  if image.ndim == 2:
    image = image[..., None]
  channels = image.shape[2]
  if channels not in (1, 3, 4):
    raise ValueError(f'image has {channels} channels; expected 1 (grey), 3 '
                     '(RGB) or 4 (RGBA)')
  image = _as_uint8(image[..., :3])
  if channels == 1:
    image = np.repeat(image, 3, axis=2)
  return np.ascontiguousarray(image)


def _as_uint8(image):
  if image.dtype == np.uint8:
    return image
  if image.dtype == np.uint16:
    return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
  if np.issubdtype(image.dtype, np.floating):
    # [0, 1] is tf.image's convention and the network's own input. A 0..255
    # float image is refused, not guessed at: its values go past 1 (one that
    # stays within [0, 1] is black on either reading).
    low, high = np.min(image), np.max(image)
    if not 0 <= low <= high <= 1:
      raise ValueError(f'float image values must be in [0, 1], got [{low}, '
                       f'{high}]: divide a 0..255 image by 255, or pass uint8')
    return np.rint(image.astype(np.float32) * 255).astype(np.uint8)
  raise ValueError(f'image dtype {image.dtype} is not supported: pass uint8 '
                   '(0..255), uint16 (0..65535) or float in [0, 1]')


def check_boxes(boxes, image_shape):
  """Face boxes as float64 [K, 4]; ValueError naming the first bad one.

  Each box [x0, y0, x1, y1] (corner coordinates) must be finite, have positive
  width and height, no side over MAX_BOX_SCALE times the image's larger side,
  and overlap the image of `image_shape` ([H, W, ...]). [] is no faces.
  """
  try:
    boxes = np.asarray(boxes, np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f'boxes must be numbers [K, 4] [x0, y0, x1, y1]: {e}'
                     ) from e
  if boxes.shape == (0,):
    boxes = boxes.reshape(0, 4)
  if boxes.ndim != 2 or boxes.shape[1] != 4:
    raise ValueError('boxes must be [K, 4] [x0, y0, x1, y1], got shape '
                     f'{boxes.shape}')
  height, width = image_shape[:2]
  for i, box in enumerate(boxes):
    problem = _box_problem(box, width, height)
    if problem:
      raise ValueError(f'box {i} {box.tolist()}: {problem}')
  return boxes


def _box_problem(box, width, height):
  """What is wrong with one [x0, y0, x1, y1] box, or None."""
  x0, y0, x1, y1 = box
  if not np.isfinite(box).all():
    return 'not finite'
  if not (x1 > x0 and y1 > y0):
    return 'needs positive width and height (x1 > x0, y1 > y0)'
  if max(x1 - x0, y1 - y0) > MAX_BOX_SCALE * max(width, height):
    return (f'a side over {MAX_BOX_SCALE} times the {width}x{height} image\'s '
            'larger side')
  if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
    return f'lies outside the {width}x{height} image'
  return None


# Exports.


def read_metadata(path):
  """The export's checked metadata for an export folder or a file in it."""
  folder = path if os.path.isdir(path) else os.path.dirname(path)
  meta_path = os.path.join(folder, METADATA)
  if not os.path.isfile(meta_path):
    raise FileNotFoundError(
        f'{meta_path} not found: {path} is not an export made by export.py '
        f'(a .tflite file needs the {METADATA} written beside it)')
  try:
    with open(meta_path, encoding='utf-8') as f:
      metadata = json.load(f)
  except ValueError as e:  # Bad JSON, or bytes that are no UTF-8 text.
    raise ValueError(f'{meta_path} is not valid JSON: {e}') from e
  if not isinstance(metadata, dict):
    raise ValueError(f'{meta_path} is not a JSON object: got '
                     f'{type(metadata).__name__}')
  _check_positive(meta_path, metadata, 'input_size', int, 'a positive integer')
  _check_positive(meta_path, metadata, 'view_scale', (int, float),
                  'a positive number')
  if 'comparison' in metadata:
    _check_comparison(meta_path, metadata['comparison'])
  return metadata


def _is_number(value, types=(int, float)):
  return isinstance(value, types) and not isinstance(value, bool)


def _check_positive(meta_path, metadata, key, types, what):
  if key not in metadata:
    raise ValueError(f'{meta_path}: no {key!r}')
  value = metadata[key]
  if not (_is_number(value, types) and 0 < value < math.inf):
    raise ValueError(f'{meta_path}: {key} must be {what}, got {value!r}')


def _check_comparison(meta_path, comparison):
  """Checks metadata['comparison'] has what fastest_equivalent reads. An
  export without one leaves the key out; null is a broken file.

  A NaN NME is valid: that file never counts as scoring the same.
  """
  rows = comparison.get('files') if isinstance(comparison, dict) else None
  if not (isinstance(rows, list) and all(
      isinstance(row, dict) and isinstance(row.get('file'), str) and
      _is_number(row.get('nme')) for row in rows)):
    raise ValueError(f'{meta_path}: comparison must be {{"files": [{{"file": '
                     'name, "nme": number}, ...]}, got '
                     f'{json.dumps(comparison)[:80]}')


def comparison_rows(metadata):
  """metadata['comparison']['files'] ([] without a comparison)."""
  return metadata.get('comparison', {}).get('files', [])


def fastest_equivalent(rows, present):
  """The fastest .tflite file in `present` that scores like the SavedModel.

  Args:
    rows: metadata['comparison']['files']: {'file': name, 'nme': NME} each,
      every file scored on the same faces.
    present: the names of the files in the export folder.

  Returns:
    A name of FASTEST_FIRST whose NME is within NME_TOLERANCE of the
    SavedModel's, or None: none is, or there is no SavedModel score to
    compare with.
  """
  nmes = {row['file']: row['nme'] for row in rows}
  if SAVED_MODEL not in nmes:
    return None
  limit = nmes[SAVED_MODEL] * (1 + NME_TOLERANCE)
  return next((name for name in FASTEST_FIRST
               if name in present and nmes.get(name, math.inf) <= limit),
              None)


def tflite_path(path, metadata):
  """The .tflite file Landmarker.load(path) runs: `path` itself, or in an
  export folder the fastest file that scored like the SavedModel
  (fastest_equivalent), else its most accurate one."""
  if not os.path.isdir(path):
    if os.path.basename(path) == SAVED_MODEL_PB:
      raise ValueError(
          f'{path}: a SavedModel is TensorFlow code, not run here: pass a '
          '.tflite file of the export (export.py --tflite), or its folder')
    return path
  present = set(os.listdir(path))
  name = fastest_equivalent(comparison_rows(metadata), present) or next(
      (name for name in MOST_ACCURATE_FIRST if name in present), None)
  if not name:
    raise ValueError(f'{path} holds no {" or ".join(MOST_ACCURATE_FIRST)}: '
                     'export TF Lite files with export.py --tflite')
  return os.path.join(path, name)


def tflite_views_fn(path, num_threads=None):
  """float views [N, S, S, 3] -> [N, 68, 2] with the TF Lite file `path`,
  one face per invoke, from any thread (each its own interpreter).

  One face at a time keeps an interpreter's tensors allocated once; batching
  would re-allocate whenever the face count changes.
  """
  model = tflite.Model(path, num_threads)
  (source,), (target,) = model.inputs, model.outputs
  if source['dtype'] != np.float32:
    raise ValueError(f'{path}: input is {np.dtype(source["dtype"]).name}; '
                     'expected float32 (export.py writes float I/O)')

  def predict(views):
    interpreter = model.interpreter()
    out = np.zeros((len(views), geometry.NUM_LANDMARKS, 2), np.float32)
    for view, result in zip(views, out):
      interpreter.set_tensor(source['index'], view[None])
      interpreter.invoke()
      result[:] = interpreter.get_tensor(target['index'])[0]
    return out

  return predict


# The refine passes: at most this many, until boxes move less than this share
# of their size (a pass on an unchanged box would give the same points).
MAX_REFINE_PASSES = 3
REFINE_TOLERANCE = 0.01


def settled(boxes, new_boxes, tolerance=REFINE_TOLERANCE):
  """Whether every [K, 4] box moved by less than `tolerance` of its size."""
  boxes, new_boxes = np.asarray(boxes), np.asarray(new_boxes)
  sizes = np.maximum(boxes[:, 2:] - boxes[:, :2], 1e-9).max(axis=1)
  moved = np.abs(new_boxes - boxes).max(axis=1)
  return bool(np.all(moved < tolerance * sizes))


class Landmarker:
  """Landmarks of faces in RGB images, given their boxes.

  Attributes:
    input_size: the side of the network's square views, in pixels.
    view_scale: a view's side over its face box's larger side.
    metadata: the export's metadata.json, with 'path': the file used.
    source: the file used: a .tflite file (for landmarker.py also a
      SavedModel folder; None for a Keras model or a bare `views_fn`).
  """

  def __init__(self, views_fn: Callable[[np.ndarray], np.ndarray],
               input_size: int, view_scale: float,
               metadata: Optional[dict] = None, source: Optional[str] = None):
    """`views_fn`: float32 views [N, S, S, 3] in [0, 1] -> [N, 68, 2]; it
    must be safe to call from several threads at once."""
    self._views_fn = views_fn
    self.input_size = int(input_size)
    self.view_scale = float(view_scale)
    self.metadata = metadata or {}
    self.source = source

  @classmethod
  def load(cls, path: str = SHIPPED_MODEL,
           num_threads: Optional[int] = None) -> 'Landmarker':
    """From export.py's output: a .tflite file with its metadata.json beside
    it, or an export folder (tflite_path picks the file). No `path`: the
    shipped model.

    Raises:
      FileNotFoundError: no `path`, or no metadata.json beside it.
      ValueError: naming the file that is broken, and how.
    """
    if not os.path.exists(path):
      raise FileNotFoundError(f'model {path} does not exist: pass a .tflite '
                              'file export.py wrote, or its folder')
    metadata = read_metadata(path)
    source = tflite_path(path, metadata)
    return cls(tflite_views_fn(source, num_threads), metadata['input_size'],
               metadata['view_scale'], dict(metadata, path=source), source)

  def predict_views(self, views: np.ndarray, flip: bool = False) -> np.ndarray:
    """uint8 views [N, S, S, 3] -> normalised landmarks [N, 68, 2].

    flip: also predict on the mirrored views and average, the mirrored
    points mapped back (x -> 1 - x) and re-indexed (left eye <-> right eye).
    """
    if not len(views):
      return np.zeros((0, geometry.NUM_LANDMARKS, 2), np.float32)
    views = np.asarray(views, np.float32) / 255.0
    if not flip:
      return np.asarray(self._views_fn(views))
    both = np.asarray(self._views_fn(np.concatenate([views, views[:, :, ::-1]])))
    direct, mirrored = both[:len(views)], both[len(views):]
    mirrored = mirrored[:, list(geometry.MIRROR_PERMUTATION)] * [-1, 1] + [1, 0]
    return (direct + mirrored) / 2

  def predict(self, image: np.ndarray, boxes, refine: bool = False,
              flip: bool = False) -> np.ndarray:
    """Landmarks [K, 68, 2] (image corner coordinates) of faces in `boxes`.

    Args:
      image: RGB [H, W, 3], natively uint8; grey, RGBA, uint16 and float in
        [0, 1] are converted (as_rgb_uint8).
      boxes: [K, 4] face boxes [x0, y0, x1, y1] in corner coordinates, each
        finite, of positive size and overlapping the image (check_boxes).
      refine: run again on the tight box of the previous pass's landmarks,
        until the boxes settle (every box moves by less than
        REFINE_TOLERANCE of its size) or after MAX_REFINE_PASSES. A
        detector's boxes differ in shape and place from the boxes the net was
        trained on (300-W's tight landmark boxes): later passes see views
        framed like its training views.
      flip: average with the prediction on the mirrored view (test-time
        flip: twice the network time).

    Raises:
      ValueError: an image or a box it does not take, saying what is wrong.
    """
    image = as_rgb_uint8(image)
    boxes = check_boxes(boxes, image.shape)
    landmarks = self._predict_once(image, boxes, flip)
    for _ in range(MAX_REFINE_PASSES if refine and len(landmarks) else 0):
      tight = np.array([geometry.landmark_box(p) for p in landmarks])
      if settled(boxes, tight):
        break
      boxes = tight
      landmarks = self._predict_once(image, boxes, flip)
    return landmarks

  def _predict_once(self, image, boxes, flip):
    squares = views_lib.view_squares(boxes, self.view_scale)
    views = views_lib.crop_views(image, squares, self.input_size)
    return views_lib.from_views(self.predict_views(views, flip), squares)
