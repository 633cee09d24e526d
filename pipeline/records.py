"""The TFRecord schema: one tf.train.Example per face.

Every face is stored as a square JPEG crop of `image/size` pixels around its face
box, with the landmarks and the box in that crop's corner coordinates (see
geometry.py) and the crop's square in the source image, so that predictions can
be mapped back to the original pixels.
"""

import numpy as np
import tensorflow as tf

from facelandmark import geometry

SCHEMA_VERSION = 1
# Written last by prepare: a folder without it is not a complete dataset.
MANIFEST = 'manifest.json'

_FEATURES = {
    'image/encoded': tf.io.FixedLenFeature([], tf.string),
    'image/size': tf.io.FixedLenFeature([], tf.int64),
    'landmarks': tf.io.FixedLenFeature([geometry.NUM_LANDMARKS * 2], tf.float32),
    'box': tf.io.FixedLenFeature([4], tf.float32),
    'crop': tf.io.FixedLenFeature([4], tf.float32),
    'source': tf.io.FixedLenFeature([], tf.string),
    'subset': tf.io.FixedLenFeature([], tf.string),
    'face_index': tf.io.FixedLenFeature([], tf.int64),
}


def _floats(values):
  return tf.train.Feature(
      float_list=tf.train.FloatList(value=np.asarray(values, np.float32).ravel()))


def _bytes(value):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def serialize_face(jpeg, size, landmarks, box, crop, source, subset, face_index):
  """A serialized tf.train.Example for one face crop."""
  feature = {
      'image/encoded': _bytes(jpeg),
      'image/size': _int(size),
      'landmarks': _floats(landmarks),
      'box': _floats(box),
      'crop': _floats(crop),
      'source': _bytes(source.encode('utf-8')),
      'subset': _bytes(subset.encode('utf-8')),
      'face_index': _int(face_index),
  }
  return tf.train.Example(
      features=tf.train.Features(feature=feature)).SerializeToString(
          deterministic=True)  # map order: the same bytes in every process


def parse_face(serialized, raw=False):
  """Parses one serialized Example into a dict of tensors.

  `image` is uint8 [S, S, 3] (decoded), `landmarks` float32 [68, 2] and `box`,
  `crop` float32 [4], all in corner coordinates. `raw`: the image bytes are
  pixels, not JPEG (the decoded-face file cache, face_cache.py).
  """
  f = tf.io.parse_single_example(serialized, _FEATURES)
  if raw:
    image = tf.io.decode_raw(f['image/encoded'], tf.uint8)
  else:
    image = tf.io.decode_jpeg(f['image/encoded'], channels=3)
  size = tf.cast(f['image/size'], tf.int32)
  image = tf.ensure_shape(tf.reshape(image, [size, size, 3]), [None, None, 3])
  return {
      'image': image,
      'landmarks': tf.reshape(f['landmarks'], [geometry.NUM_LANDMARKS, 2]),
      'box': f['box'],
      'crop': f['crop'],
      'source': f['source'],
      'subset': f['subset'],
      'face_index': f['face_index'],
  }


def shard_name(split, index, num_shards):
  return f'{split}-{index:05d}-of-{num_shards:05d}.tfrecord'


def shard_pattern(data_dir, split):
  return f'{data_dir}/{split}-*-of-*.tfrecord'
