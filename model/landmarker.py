"""Face boxes to 68 landmarks in image pixels, with an exported or Keras model.

The network sees a square view around each face box (geometry.square_around
with the training `view_scale`), resampled to `input_size` pixels, and returns
the landmarks in that view normalised to [0, 1]. This module cuts the views
(`crop_views`, the one implementation every caller uses), runs the model and
maps its output back to image corner coordinates (geometry.py).

  landmarker = Landmarker.load('export/')              # SavedModel folder
  landmarker = Landmarker.load('export/landmarks_int8.tflite', num_threads=2)
  points = landmarker.predict(rgb_image, boxes, refine=True)  # [K, 68, 2]
"""

import json
import os
import warnings

import cv2
import numpy as np
import tensorflow as tf

from pipeline import geometry

# Written by export.py beside the SavedModel and the .tflite files.
METADATA = 'metadata.json'
# The SavedModel signature with the network's own contract: float views in
# [0, 1] -> normalised landmarks. The .tflite files are converted from it.
VIEWS_SIGNATURE = 'views'


def view_squares(boxes, view_scale):
  """[K, 4] face boxes -> [K, 4] view squares (geometry.square_around each)."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  return np.array([geometry.square_around(b, view_scale) for b in boxes]
                  ).reshape(-1, 4)


def crop_views(image, squares, size):
  """uint8 [K, size, size, C] bilinear resamples of `image` inside `squares`.

  View pixel (u, v) is the image at corner coordinates
  (x0 + (u + 0.5) * s, y0 + (v + 0.5) * s), s = square side / size: the view
  of geometry.to_crop. Outside the image is black, as in the training views.
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


def read_metadata(path):
  """The export's metadata for a SavedModel folder or a .tflite file in it."""
  folder = path if os.path.isdir(path) else os.path.dirname(path)
  meta_path = os.path.join(folder, METADATA)
  if not os.path.isfile(meta_path):
    raise FileNotFoundError(
        f'{meta_path} not found: {path} is not an export made by export.py '
        f'(a .tflite file needs the {METADATA} written beside it)')
  with open(meta_path, encoding='utf-8') as f:
    metadata = json.load(f)
  for key in ('input_size', 'view_scale'):
    if key not in metadata:
      raise ValueError(f'{meta_path}: no {key!r}')
  return metadata


def _tflite_interpreter(path, num_threads):
  try:  # LiteRT, TF Lite's successor, when installed.
    from ai_edge_litert import interpreter as litert  # pylint: disable=all
    Interpreter = litert.Interpreter  # pylint: disable=invalid-name
  except ImportError:
    Interpreter = tf.lite.Interpreter  # pylint: disable=invalid-name
  with warnings.catch_warnings():
    # TF 2.21 warns that tf.lite.Interpreter moves to LiteRT; it still works.
    warnings.simplefilter('ignore', UserWarning)
    return Interpreter(model_path=path, num_threads=num_threads)


def _tflite_views_fn(path, num_threads):
  """float views [N, S, S, 3] -> [N, 68, 2], one face per invoke.

  One face at a time keeps the interpreter's tensors allocated once; batching
  would re-allocate whenever the face count changes.
  """
  interpreter = _tflite_interpreter(path, num_threads)
  interpreter.allocate_tensors()
  (source,), (target,) = (interpreter.get_input_details(),
                          interpreter.get_output_details())
  if source['dtype'] != np.float32:
    raise ValueError(f'{path}: input is {np.dtype(source["dtype"]).name}; '
                     'expected float32 (export.py writes float I/O)')

  def predict(views):
    out = np.zeros((len(views), geometry.NUM_LANDMARKS, 2), np.float32)
    for view, result in zip(views, out):
      interpreter.set_tensor(source['index'], view[None])
      interpreter.invoke()
      result[:] = interpreter.get_tensor(target['index'])[0]
    return out

  return predict


def _saved_model_views_fn(path):
  loaded = tf.saved_model.load(path)
  if VIEWS_SIGNATURE not in loaded.signatures:
    raise ValueError(f'{path}: SavedModel without a {VIEWS_SIGNATURE!r} '
                     'signature: not made by export.py')

  def predict(views):
    # Through `loaded`: the signature alone does not keep the variables alive.
    signature = loaded.signatures[VIEWS_SIGNATURE]
    return signature(views=tf.constant(views))['landmarks'].numpy()

  return predict


def _keras_views_fn(model):
  run = tf.function(lambda views: model(views, training=False),
                    reduce_retracing=True)
  return lambda views: run(tf.constant(views)).numpy()


class Landmarker:
  """Landmarks of faces in RGB images, given their boxes."""

  def __init__(self, views_fn, input_size, view_scale, metadata=None):
    """`views_fn`: float32 views [N, S, S, 3] in [0, 1] -> [N, 68, 2]."""
    self._views_fn = views_fn
    self.input_size = int(input_size)
    self.view_scale = float(view_scale)
    self.metadata = metadata or {}

  @classmethod
  def load(cls, path, num_threads=None):
    """From export.py's output: its folder (SavedModel) or one .tflite file.

    `num_threads` sets the TF Lite interpreter's threads (None: its default).
    TensorFlow's own threads are process-wide: see tf.config.threading.
    """
    if not os.path.exists(path):
      raise FileNotFoundError(f'model {path} does not exist: export one with '
                              '`python export.py` or pass its path')
    metadata = read_metadata(path)
    if path.endswith('.tflite'):
      views_fn = _tflite_views_fn(path, num_threads)
    elif os.path.isfile(os.path.join(path, 'saved_model.pb')):
      views_fn = _saved_model_views_fn(path)
    else:
      raise ValueError(f'{path}: neither a .tflite file nor a SavedModel '
                       'folder')
    return cls(views_fn, metadata['input_size'], metadata['view_scale'],
               dict(metadata, path=path))

  @classmethod
  def from_keras(cls, model, input_size, view_scale):
    return cls(_keras_views_fn(model), input_size, view_scale)

  def predict_views(self, views):
    """uint8 views [N, S, S, 3] -> normalised landmarks [N, 68, 2]."""
    if not len(views):
      return np.zeros((0, geometry.NUM_LANDMARKS, 2), np.float32)
    return np.asarray(self._views_fn(np.asarray(views, np.float32) / 255.0))

  def predict(self, image, boxes, refine=False):
    """Landmarks [K, 68, 2] (image corner coordinates) of faces in `boxes`.

    Args:
      image: uint8 RGB [H, W, 3].
      boxes: [K, 4] face boxes [x0, y0, x1, y1] in corner coordinates.
      refine: run again on the tight box of the first pass's landmarks. A
        detector's boxes differ in shape and place from the boxes the net was
        trained on (300-W's tight landmark boxes): the second pass sees a view
        framed like its training views.
    """
    landmarks = self._predict_once(image, boxes)
    if refine and len(landmarks):
      landmarks = self._predict_once(
          image, [geometry.landmark_box(p) for p in landmarks])
    return landmarks

  def _predict_once(self, image, boxes):
    squares = view_squares(boxes, self.view_scale)
    views = crop_views(image, squares, self.input_size)
    return from_views(self.predict_views(views), squares)
