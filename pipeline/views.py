"""The network's view of a face in TensorFlow (batched, in-graph): which box,
the square around it, the crop and the way back. They match the runtime's
numpy views (facelandmark/views.py: the definition, with its pixel
convention), so that training, evaluation, export and serving agree.
"""

import tensorflow as tf

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
  """facelandmark.views.crop_views as graph ops: float32 [K, size, size, C] in [0, 1].

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
