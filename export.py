"""Exports a training workdir as a SavedModel and TF Lite files.

  python export.py --workdir=RUN --export_dir=EXPORT \
      [--tflite=float32,float16,int8 --data_dir=DATA]

EXPORT/ then holds:
  saved_model.pb, variables/   a SavedModel with these signatures:
    serving_default (= image): `image` uint8 [H, W, 3] RGB and `boxes` float32
        [K, 4] face boxes [x0, y0, x1, y1] -> `landmarks` float32 [K, 68, 2] in
        image pixels; the face views are cut inside the graph.
    crops: `crops` uint8 [N, H, W, 3], each crop a whole view (best: a square
        of view_scale times the face box) -> `landmarks` [N, 68, 2] in crop
        pixels.
    views: `views` float32 [N, S, S, 3] in [0, 1] -> `landmarks` [N, 68, 2] in
        [0, 1]: the network itself.
  landmarks_{float32,float16,int8}.tflite: the `views` signature. All three
      take float32 [1, S, S, 3] in [0, 1] and return float32 [1, 68, 2]: int8
      quantizes inside (full-integer weights and activations) and keeps float
      I/O, so every file is used the same way (model/landmarker.py).
  metadata.json: input_size, view_scale, where the weights came from, and how
      each file scored on the same faces.

Coordinates are corner coordinates (pipeline/geometry.py). The export is
written to a temporary folder and renamed into place when complete.
"""

import json
import os
import re
import shutil
import sys
import tempfile

from absl import app
from absl import flags
import cv2
import numpy as np
import tensorflow as tf

import evaluate
import train_loop
from model import landmarker as landmarker_lib
from pipeline import augment
from pipeline import geometry
from pipeline import reader
from pipeline import synthetic

TFLITE_VARIANTS = ('float32', 'float16', 'int8')
SYNTHETIC_FACES = 32  # Compared on when no --data_dir is given.


def tflite_name(variant):
  return f'landmarks_{variant}.tflite'


# The SavedModel.


def view_squares_in_graph(boxes, view_scale):
  """landmarker.view_squares (geometry.square_around per box) as graph ops."""
  centres = (boxes[:, :2] + boxes[:, 2:]) / 2
  half_sides = view_scale / 2 * tf.reduce_max(boxes[:, 2:] - boxes[:, :2],
                                              axis=1, keepdims=True)
  return tf.concat([centres - half_sides, centres + half_sides], axis=1)


def crop_and_resize_boxes(squares, height, width, size):
  """Boxes that make tf.image.crop_and_resize sample like crop_views.

  crop_and_resize samples output pixel u of normalised box [y1, x1, y2, x2] at
  pixel-centre index x1 * (W - 1) + u * (x2 - x1) * (W - 1) / (size - 1); the
  view wants corner coordinate x0 + (u + 0.5) * s (s = side / size), i.e. index
  x0 + (u + 0.5) * s - 0.5, plus 1 on an image padded by one black pixel per
  side (`crop_views_in_graph`).
  """
  s = (squares[:, 2:3] - squares[:, 0:1]) / size
  first = squares[:, :2] + 0.5 * s + 0.5  # (x, y) index of view pixel 0.
  last = first + (size - 1) * s
  padded_span = tf.stack([width + 1.0, height + 1.0])  # Padded size - 1.
  first, last = first / padded_span, last / padded_span
  return tf.stack([first[:, 1], first[:, 0], last[:, 1], last[:, 0]], axis=1)


def crop_views_in_graph(image, squares, size):
  """landmarker.crop_views as graph ops: float32 [K, size, size, C] in [0, 1].

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
    squares = view_squares_in_graph(boxes, self.view_scale)

    def landmarks():
      views = crop_views_in_graph(image, squares, self.input_size)
      points = self.model(views, training=False)
      sides = squares[:, 2] - squares[:, 0]
      # landmarker.from_views in-graph: view origin + normalised * side.
      return squares[:, None, :2] + points * sides[:, None, None]

    def no_faces():
      return tf.zeros([0, geometry.NUM_LANDMARKS, 2])

    # A frame without faces is common; BatchNormalization fails on batch 0.
    return {'landmarks': tf.cond(tf.shape(boxes)[0] > 0, landmarks, no_faces)}


def save_saved_model(model, input_size, view_scale, path):
  module = LandmarkModule(model, input_size, view_scale)
  tf.saved_model.save(module, path, signatures=module.signatures())


# TF Lite.


def representative_views(data_dir, input_size, view_scale, count, seed=0):
  """`count` unaugmented training views [1, S, S, 3], shuffled across shards."""
  dataset = reader.make_dataset(data_dir, 'train', 1, training=True, seed=seed,
                                deterministic=True)
  for batch in dataset.take(count):
    views, _ = augment.center_view(batch['image'], batch['landmarks'],
                                   batch['box'], input_size, view_scale)
    yield [views.numpy()]


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


# Where the weights came from.


def checkpoint_step(path):
  match = re.search(r'ckpt-(\d+)$', path)
  return int(match.group(1)) if match else None


def validation_nme(workdir, which, step):
  """The best checkpoint's validation NME, from train_loop's best.json."""
  path = os.path.join(workdir, 'best', 'best.json')
  if which != 'best' or not os.path.isfile(path):
    return None
  with open(path, encoding='utf-8') as f:
    best = json.load(f)
  return best.get('nme') if best.get('step') == step else None


# Checking every exported file on the same faces.


def synthetic_samples(count, seed=0, size=192):
  """Generated one-face images, for a comparison when no data is given."""
  for i in range(count):
    bgr, (landmarks,) = synthetic.render_image(np.random.default_rng([seed, i]),
                                               size, size, 1)
    yield evaluate.Sample(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
                          geometry.landmark_box(landmarks)[None],
                          landmarks[None], 'synthetic', f'synthetic/{i}')


def compare(files, samples):
  """NME of each exported file on the same faces, and how far its points are
  from the first file's (mean, in image pixels).

  `files`: {label: path}, the SavedModel first. Returns one dict per file.
  """
  samples = list(samples)
  rows, reference = [], None
  for label, path in files.items():
    result = evaluate.predict_samples(landmarker_lib.Landmarker.load(path),
                                      samples)
    if reference is None:
      reference = result.predicted
    rows.append({
        'file': label,
        'bytes': _size(path),
        'nme': float(np.mean(result.nme)),
        'pixels_from_saved_model': float(np.mean(
            np.linalg.norm(result.predicted - reference, axis=-1))),
        'faces': len(result.nme),
    })
  return rows


def _size(path):
  if os.path.isfile(path):
    return os.path.getsize(path)
  return sum(os.path.getsize(os.path.join(folder, name))
             for folder, _, names in os.walk(path) for name in names)


def format_table(rows, faces_description):
  lines = [f'NME on {faces_description}:',
           f'{"file":<28} {"size":>10} {"NME %":>8} {"px from SavedModel":>19}']
  for row in rows:
    lines.append(f'{row["file"]:<28} {row["bytes"] / 2**20:>8.2f}MB '
                 f'{100 * row["nme"]:>8.3f} '
                 f'{row["pixels_from_saved_model"]:>19.4f}')
  return '\n'.join(lines)


# The export.


def _check_args(tflite, data_dir, checkpoint):
  unknown = sorted(set(tflite) - set(TFLITE_VARIANTS))
  if unknown:
    raise ValueError(f'--tflite: unknown variant(s) {unknown}; choose from '
                     f'{", ".join(TFLITE_VARIANTS)}')
  if 'int8' in tflite and not data_dir:
    raise ValueError('--tflite=int8 needs --data_dir: full-integer '
                     'quantization calibrates on real training views')
  if checkpoint not in ('best', 'latest'):
    raise ValueError(f'--checkpoint must be best or latest, got {checkpoint!r}')


def _write_json(path, data):
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(data, f, indent=2)


def _replace(tmp, export_dir):
  """Moves the finished export into place; an old one goes only after that."""
  old = None
  if os.path.exists(export_dir):
    old = tempfile.mkdtemp(prefix=f'.{os.path.basename(export_dir)}.old-',
                           dir=os.path.dirname(export_dir))
    os.rename(export_dir, os.path.join(old, 'export'))
  os.rename(tmp, export_dir)
  if old:
    shutil.rmtree(old)


def export(workdir, export_dir, *, tflite=(), checkpoint='best', data_dir=None,
           overwrite=False, num_calibration=200, log=print):
  """Writes the export (see the module docstring); returns its metadata."""
  _check_args(tflite, data_dir, checkpoint)
  export_dir = os.path.abspath(export_dir)
  if os.path.exists(export_dir) and not overwrite:
    raise FileExistsError(f'--export_dir {export_dir} exists; pass --overwrite '
                          'to replace it')
  model, cfg, path = train_loop.restore_model(workdir, which=checkpoint)
  step = checkpoint_step(path)
  metadata = {
      'input_size': cfg.input_size,
      'view_scale': cfg.view_scale,
      'alpha': cfg.alpha,
      'head': cfg.head,
      'head_width': cfg.head_width,
      'workdir': os.path.abspath(workdir),
      'checkpoint': path,
      'step': step,
      'validation_nme': validation_nme(workdir, checkpoint, step),
      'coordinates': 'corner: pixel (i, j) covers [i, i+1) x [j, j+1)',
      'tflite_io': 'float32 [1, S, S, 3] in [0, 1] -> float32 [1, 68, 2] in '
                   '[0, 1], every variant',
  }
  os.makedirs(os.path.dirname(export_dir), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(export_dir)}.tmp-',
                         dir=os.path.dirname(export_dir))
  try:
    save_saved_model(model, cfg.input_size, cfg.view_scale, tmp)
    _write_json(os.path.join(tmp, landmarker_lib.METADATA), metadata)
    files = {'saved_model': tmp}

    def representative():
      return representative_views(data_dir, cfg.input_size, cfg.view_scale,
                                  num_calibration)

    for variant in tflite:
      log(f'Converting to TF Lite {variant}...')
      flatbuffer = convert_tflite(tmp, variant, representative)
      files[tflite_name(variant)] = os.path.join(tmp, tflite_name(variant))
      with open(files[tflite_name(variant)], 'wb') as f:
        f.write(flatbuffer)
    if data_dir:
      samples = evaluate.shard_samples(data_dir, 'val')
      described = f'the validation shards of {data_dir}'
    else:
      samples = synthetic_samples(SYNTHETIC_FACES)
      described = (f'{SYNTHETIC_FACES} generated cartoon faces (pass '
                   '--data_dir for real ones)')
    rows = compare(files, samples)
    log(format_table(rows, described))
    metadata['comparison'] = {'faces': described, 'files': rows}
    _write_json(os.path.join(tmp, landmarker_lib.METADATA), metadata)
    _replace(tmp, export_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  log(f'Exported {path} to {export_dir}')
  return metadata


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('workdir', None, 'Training workdir (train_loop.py).')
  flags.DEFINE_string('export_dir', None, 'Folder to create for the export.')
  flags.DEFINE_list('tflite', [], f'TF Lite variants to add: '
                    f'{",".join(TFLITE_VARIANTS)}.')
  flags.DEFINE_enum('checkpoint', 'best', ['best', 'latest'],
                    'Which checkpoint of the workdir.')
  flags.DEFINE_string('data_dir', None, 'Prepared shards: int8 calibrates on '
                      'its train views; every file is scored on its val split.')
  flags.DEFINE_integer('num_calibration', 200, 'Views for int8 calibration.')
  flags.DEFINE_bool('overwrite', False, 'Replace an existing --export_dir.')
  flags.mark_flags_as_required(['workdir', 'export_dir'])


def main(argv):
  del argv
  try:
    export(FLAGS.workdir, FLAGS.export_dir, tflite=FLAGS.tflite,
           checkpoint=FLAGS.checkpoint, data_dir=FLAGS.data_dir,
           overwrite=FLAGS.overwrite, num_calibration=FLAGS.num_calibration)
  except (FileExistsError, FileNotFoundError, ValueError) as e:
    sys.exit(f'export: {e}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
