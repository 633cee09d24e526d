"""TF Lite files of the `views` signature: float32, float16 and int8.

All three take float32 [1, S, S, 3] in [0, 1] and return float32 [1, 68, 2]:
int8 quantizes inside (full-integer weights and activations) and keeps float
I/O, so every file is used the same way (model/landmarker.py).
"""

import tensorflow as tf

from model import landmarker as landmarker_lib
from pipeline import augment
from pipeline import reader
from pipeline import views

TFLITE_VARIANTS = ('float32', 'float16', 'int8')


def representative_views(data_dir, input_size, view_scale, box, count, seed=0):
  """`count` unaugmented training views [1, S, S, 3], shuffled across shards,
  built on the same face box (`box`, views.BOXES) as training and serving."""
  dataset = reader.make_dataset(data_dir, 'train', 1, training=True, seed=seed,
                                deterministic=True)
  for batch in dataset.take(count):
    boxes = views.face_boxes(batch['landmarks'], batch['box'], box)
    view, _ = augment.center_view(batch['image'], batch['landmarks'], boxes,
                                  input_size, view_scale)
    yield [view.numpy()]


def convert_tflite(saved_model_dir, variant, representative=None):
  """The `views` signature as a .tflite flatbuffer (bytes)."""
  converter = tf.lite.TFLiteConverter.from_saved_model(
      saved_model_dir, signature_keys=[landmarker_lib.VIEWS_SIGNATURE])
  if variant == 'float16':
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
  elif variant == 'int8':
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  return converter.convert()
