"""The network's view of a face in TensorFlow (batched, in-graph): which box,
the square around it, the crop and the way back. They match the runtime's
numpy views (facelandmark/views.py: the definition, with its pixel
convention), so that training, evaluation, export and serving agree.
"""

import math

import tensorflow as tf

from facelandmark import views as numpy_views

# The face box a view is built on: the tight landmark box (300-W's convention,
# and what the landmarker's refine pass gives), or the annotation's own box
# (e.g. dlib's detector boxes).
BOXES = ('landmarks', 'annotation')


def face_boxes(landmarks, annotation_boxes, box):
  """The [..., 4] boxes views are built on, for [..., 68, 2] landmarks.

  Takes numpy arrays or tensors and returns a tensor (np.asarray it for numpy).
  """
  if box not in BOXES:
    raise ValueError(f'--box must be one of {BOXES}, got {box!r}')
  if box == 'annotation':
    return tf.convert_to_tensor(annotation_boxes)
  return tf.concat([tf.reduce_min(landmarks, axis=-2),
                    tf.reduce_max(landmarks, axis=-2)], axis=-1)


def view_squares_tf(boxes, view_scale):
  """facelandmark.views.view_squares as graph ops on float [K, 4] boxes."""
  centres = (boxes[:, :2] + boxes[:, 2:]) / 2
  half_sides = view_scale / 2 * tf.reduce_max(boxes[:, 2:] - boxes[:, :2],
                                              axis=1, keepdims=True)
  return tf.concat([centres - half_sides, centres + half_sides], axis=1)


def crop_and_resize_boxes(squares, height, width, size):
  """Boxes that make tf.image.crop_and_resize sample like crop_views
  (facelandmark/views.py).

  crop_and_resize samples output pixel u of normalised box [y1, x1, y2, x2] at
  pixel-centre index x1 * (W - 1) + u * (x2 - x1) * (W - 1) / (size - 1); the
  view wants corner coordinate x0 + (u + 0.5) * s (s = side / size), i.e. index
  x0 + (u + 0.5) * s - 0.5, plus 1 on an image padded by one black pixel per
  side (`crop_views_tf`).
  """
  s = (squares[:, 2:3] - squares[:, 0:1]) / size
  first = squares[:, :2] + 0.5 * s + 0.5  # (x, y) index of view pixel 0.
  last = first + (size - 1) * s
  padded_span = tf.stack([width + 1.0, height + 1.0])  # Padded size - 1.
  first, last = first / padded_span, last / padded_span
  return tf.stack([first[:, 1], first[:, 0], last[:, 1], last[:, 0]], axis=1)


def crop_views_tf(image, squares, size):
  """crop_views as graph ops: float32 [K, size, size, C] in [0, 1], each
  square cut from its pyramid level as crop_views does."""
  channels = image.shape[-1]

  def one(square):
    step = (square[2] - square[0]) / size
    k = tf.pow(2.0, tf.floor(tf.math.log(tf.maximum(step, 1.0)) / math.log(2.0)))
    return tf.cond(k > 1.0,
                   lambda: _pyramid_level_view(image, square, size, k),
                   lambda: _bilinear_views(image, square[None], size)[0])

  return tf.map_fn(one, tf.cast(squares, tf.float32), fn_output_signature=(
      tf.TensorSpec([size, size, channels], tf.float32)))


def _pyramid_level_view(image, square, size, k):
  """_pyramid_level's window, k x k means (rounded to uint8 like OpenCV), then
  the bilinear view."""
  margin = numpy_views.LEVEL_MARGIN
  left = (tf.floor(tf.floor(square[0]) / k) - margin) * k
  top = (tf.floor(tf.floor(square[1]) / k) - margin) * k
  side = tf.maximum(
      (tf.floor(tf.math.ceil(square[2]) / k) + margin + 1) * k - left,
      (tf.floor(tf.math.ceil(square[3]) / k) + margin + 1) * k - top)
  h, w = (tf.cast(tf.shape(image)[i], tf.float32) for i in (0, 1))
  ix0, ix1 = (tf.clip_by_value(v, 0.0, w) for v in (left, left + side))
  iy0, iy1 = (tf.clip_by_value(v, 0.0, h) for v in (top, top + side))
  as_int = lambda v: tf.cast(v, tf.int32)
  patch = tf.pad(image[as_int(iy0):as_int(iy1), as_int(ix0):as_int(ix1)],
                 [[as_int(iy0 - top), as_int(top + side - iy1)],
                  [as_int(ix0 - left), as_int(left + side - ix1)], [0, 0]])
  # Area resizing at an integer factor is the exact k x k mean.
  level = tf.round(tf.image.resize(tf.cast(patch, tf.float32),
                                   as_int(tf.stack([side, side]) / k),
                                   method='area'))
  moved = (square - tf.stack([left, top, left, top])) / k
  return _bilinear_views(level, moved[None], size)[0]


def _bilinear_views(image, squares, size):
  """Bilinear views [K, size, size, C] in [0, 1] of a uint8-valued image.

  The image gets one black pixel per side: crop_and_resize gives black
  beyond the last pixel centre, where OpenCV (and the training views) still
  blend the edge pixel with black.
  """
  height_width = tf.cast(tf.shape(image)[:2], tf.float32)
  padded = tf.pad(image, [[1, 1], [1, 1], [0, 0]])[None]
  boxes = crop_and_resize_boxes(squares, height_width[0], height_width[1], size)
  return tf.image.crop_and_resize(padded, boxes,
                                  tf.zeros([tf.shape(squares)[0]], tf.int32),
                                  [size, size]) / 255.0


def from_views_tf(points, squares):
  """facelandmark.views.from_views as graph ops: view origin + normalised point * side."""
  sides = squares[:, 2] - squares[:, 0]
  return squares[:, None, :2] + points * sides[:, None, None]
