"""export.py: the SavedModel's signatures, TF Lite files, atomic writes."""

import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

import export
import faces
import train_loop
from model import landmarker as landmarker_lib
from pipeline import augment
from pipeline import geometry
from pipeline import reader

@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('export'))
  _, shards = faces.make_faces(root)
  workdir = faces.train_tiny(shards, os.path.join(root, 'work'))
  export_dir = os.path.join(root, 'exported')
  metadata = export.export(workdir, export_dir,
                           tflite=export.TFLITE_VARIANTS, data_dir=shards,
                           num_calibration=16, log=lambda *_: None)
  model, _, _ = train_loop.restore_model(workdir)
  batch = next(iter(reader.make_dataset(shards, 'val', 8, training=False)))
  views, _ = augment.center_view(batch['image'], batch['landmarks'],
                                 batch['box'], faces.INPUT_SIZE, 1.25)
  return dict(root=root, shards=shards, workdir=workdir, export_dir=export_dir,
              metadata=metadata, model=model, views=views.numpy(),
              loaded=tf.saved_model.load(export_dir))


def test_metadata_records_view_and_source(setup):
  with open(os.path.join(setup['export_dir'], 'metadata.json')) as f:
    metadata = json.load(f)
  assert metadata['input_size'] == faces.INPUT_SIZE
  assert metadata['view_scale'] == 1.25
  assert metadata['step'] == 20
  assert metadata['checkpoint'].endswith('ckpt-20')
  with open(os.path.join(setup['workdir'], 'best', 'best.json')) as f:
    assert metadata['validation_nme'] == pytest.approx(json.load(f)['nme'])
  rows = metadata['comparison']['files']
  assert [r['file'] for r in rows] == ['saved_model'] + [
      export.tflite_name(v) for v in export.TFLITE_VARIANTS]
  assert all(r['faces'] > 0 and np.isfinite(r['nme']) for r in rows)


def test_views_signature_matches_keras(setup):
  expected = setup['model'](setup['views'], training=False).numpy()
  got = setup['loaded'].signatures['views'](views=tf.constant(setup['views']))
  np.testing.assert_allclose(got["landmarks"].numpy(), expected, atol=1e-6)
  # The trained net reacts to its input: equality above means something.
  assert np.std(expected, axis=0).mean() > 2e-4


def test_crops_signature_returns_crop_pixels(setup):
  views = setup['views']
  crops = np.round(views * 255).astype(np.uint8)
  expected = faces.INPUT_SIZE * setup['model'](crops / 255.0,
                                              training=False).numpy()
  got = setup['loaded'].signatures['crops'](crops=tf.constant(crops))
  np.testing.assert_allclose(got['landmarks'].numpy(), expected, atol=1e-3)
  # A crop twice the size: the same face, coordinates twice as large.
  large = np.stack([cv2.resize(c, (2 * faces.INPUT_SIZE, 2 * faces.INPUT_SIZE),
                               interpolation=cv2.INTER_LINEAR) for c in crops])
  got = setup['loaded'].signatures['crops'](crops=tf.constant(large))
  np.testing.assert_allclose(got['landmarks'].numpy(), 2 * expected, atol=0.5)


def test_in_graph_crop_samples_like_crop_views():
  image, landmarks = faces.face_image()
  height, width = image.shape[:2]
  squares = np.array([geometry.square_around(geometry.landmark_box(p), 1.25)
                      for p in landmarks] +
                     [[-20.3, -10.6, 70.1, 79.8],        # off the top left
                      [width - 30.2, height - 41.5, width + 20.0,
                       height + 8.7]])
  expected = landmarker_lib.crop_views(image, squares, faces.INPUT_SIZE)
  got = export.crop_views_in_graph(tf.constant(image),
                                   tf.constant(squares, tf.float32),
                                   faces.INPUT_SIZE).numpy() * 255
  # OpenCV interpolates in fixed point (1/32 pixel) and rounds to uint8.
  np.testing.assert_allclose(got, expected, atol=2.5)
  assert np.mean(np.abs(got - expected)) < 0.5
  np.testing.assert_allclose(
      export.view_squares_in_graph(tf.constant(squares[:2], tf.float32),
                                   1.25).numpy(),
      landmarker_lib.view_squares(squares[:2], 1.25), atol=1e-3)


def test_image_signature_matches_landmarker(setup):
  image, landmarks = faces.face_image(seed=3)
  boxes = np.array([geometry.landmark_box(p) for p in landmarks], np.float32)
  signatures = setup['loaded'].signatures
  got = signatures['image'](image=tf.constant(image),
                            boxes=tf.constant(boxes))['landmarks'].numpy()
  default = signatures['serving_default'](
      image=tf.constant(image), boxes=tf.constant(boxes))['landmarks'].numpy()
  expected = landmarker_lib.Landmarker.load(setup['export_dir']).predict(
      image, boxes)
  np.testing.assert_allclose(got, expected, atol=0.05)
  np.testing.assert_array_equal(got, default)
  none = signatures['image'](image=tf.constant(image),
                             boxes=tf.zeros([0, 4]))['landmarks']
  assert none.shape == (0, 68, 2)


def test_tflite_variants(setup):
  views = setup['views']
  reference = setup['model'](views, training=False).numpy()
  outputs = {}
  for variant in export.TFLITE_VARIANTS:
    path = os.path.join(setup['export_dir'], export.tflite_name(variant))
    outputs[variant] = landmarker_lib.Landmarker.load(path).predict_views(
        np.round(views * 255).astype(np.uint8))
  quantized_input = setup['model'](np.round(views * 255) / 255,
                                   training=False).numpy()
  np.testing.assert_allclose(outputs['float32'], quantized_input, atol=1e-4)
  np.testing.assert_allclose(outputs['float16'], quantized_input, atol=1e-2)
  int8 = outputs['int8']
  assert np.all(np.isfinite(int8)) and int8.min() > -0.5 and int8.max() < 1.5
  # Within a few pixels of the float model (the spread of its points is 0.3).
  assert np.mean(np.abs(int8 - reference)) < 0.03
  sizes = {v: os.path.getsize(os.path.join(setup['export_dir'],
                                           export.tflite_name(v)))
           for v in export.TFLITE_VARIANTS}
  assert sizes['int8'] < sizes['float16'] < sizes['float32']


def test_existing_export_is_kept_unless_overwrite(setup):
  with pytest.raises(FileExistsError, match='--overwrite'):
    export.export(setup['workdir'], setup['export_dir'])
  # A failing export (no shards to calibrate on) leaves the old one
  # whole and no temporary folder behind.
  before = sorted(os.listdir(setup['export_dir']))
  with pytest.raises(FileNotFoundError, match='manifest'):
    export.export(setup['workdir'], setup['export_dir'], tflite=['int8'],
                  data_dir=setup['root'], overwrite=True, log=lambda *_: None)
  assert sorted(os.listdir(setup['export_dir'])) == before
  assert sorted(os.listdir(setup['root'])) == ['exported', 'raw', 'shards',
                                               'work']


def test_overwrite_replaces(setup, tmp_path):
  target = str(tmp_path / 'again')
  os.makedirs(target)
  with open(os.path.join(target, 'stale.txt'), 'w') as f:
    f.write('old')
  export.export(setup['workdir'], target, overwrite=True, log=lambda *_: None)
  assert 'stale.txt' not in os.listdir(target)
  assert os.listdir(tmp_path) == ['again']
  with open(os.path.join(target, 'metadata.json')) as f:
    assert 'generated' in json.load(f)['comparison']['faces']


def test_bad_arguments_name_the_flag(setup, tmp_path):
  with pytest.raises(ValueError, match='--data_dir'):
    export.export(setup['workdir'], str(tmp_path / 'x'), tflite=['int8'])
  with pytest.raises(ValueError, match='--tflite'):
    export.export(setup['workdir'], str(tmp_path / 'x'), tflite=['int4'])
  assert not os.listdir(tmp_path)
