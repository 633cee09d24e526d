"""The SavedModel: the Keras net with three serving signatures.

  serving_default (= image): `image` uint8 [H, W, 3] RGB and `boxes` float32
      [K, 4] face boxes [x0, y0, x1, y1] -> `landmarks` float32 [K, 68, 2] in
      image pixels; the face views are cut inside the graph
      (pipeline/views.py, the TF side).
  crops: `crops` uint8 [N, H, W, 3], each crop a whole view (best: a square of
      view_scale times the face box) -> `landmarks` [N, 68, 2] in crop pixels.
  views: `views` float32 [N, S, S, 3] in [0, 1] -> `landmarks` [N, 68, 2] in
      [0, 1]: the network itself; the TF Lite files are converted from it.
"""

import tensorflow as tf

from model import landmarker as landmarker_lib
from facelandmark import geometry
from pipeline import views as views_lib


class LandmarkModule(tf.Module):
  """The Keras model with the export's three signatures."""

  def __init__(self, model, input_size, view_scale):
    super().__init__()
    self.model = model
    # Keras 3 variables wrap tf.Variables that tf.Module does not find on its
    # own; untracked, the TF Lite converter cannot freeze them and leaves
    # READ_VARIABLE ops that fail at run time.
    self.tf_variables = [v.value for v in model.variables]
    self.input_size = int(input_size)
    self.view_scale = float(view_scale)
    size = self.input_size
    self.views = tf.function(self._views, input_signature=[
        tf.TensorSpec([None, size, size, 3], tf.float32, name='views')])
    self.crops = tf.function(self._crops, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.uint8, name='crops')])
    self.image = tf.function(self._image, input_signature=[
        tf.TensorSpec([None, None, 3], tf.uint8, name='image'),
        tf.TensorSpec([None, 4], tf.float32, name='boxes')])

  def signatures(self):
    return {'serving_default': self.image, 'image': self.image,
            'crops': self.crops, landmarker_lib.VIEWS_SIGNATURE: self.views}

  def _views(self, views):
    return {'landmarks': self.model(views, training=False)}

  def _crops(self, crops):
    size = self.input_size
    # Antialiased: crops larger than the view are averaged down, not aliased.
    views = tf.image.resize(tf.cast(crops, tf.float32) / 255.0, [size, size],
                            antialias=True)
    height_width = tf.cast(tf.shape(crops)[1:3], tf.float32)
    return {'landmarks': self.model(views, training=False) * height_width[::-1]}

  def _image(self, image, boxes):
    squares = views_lib.view_squares_tf(boxes, self.view_scale)

    def landmarks():
      views = views_lib.crop_views_tf(image, squares, self.input_size)
      return views_lib.from_views_tf(self.model(views, training=False),
                                     squares)

    def no_faces():
      return tf.zeros([0, geometry.NUM_LANDMARKS, 2])

    # A frame without faces is common; BatchNormalization fails on batch 0.
    return {'landmarks': tf.cond(tf.shape(boxes)[0] > 0, landmarks, no_faces)}


def save_saved_model(model, input_size, view_scale, path):
  module = LandmarkModule(model, input_size, view_scale)
  tf.saved_model.save(module, path, signatures=module.signatures())
