"""exporting/: the SavedModel's signatures, TF Lite files, atomic writes."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

import faces
from exporting import export_lib
from exporting import tflite as tflite_lib
from facelandmark import landmarker as runtime
from facelandmark import views as numpy_views
from model import landmarker as landmarker_lib
from pipeline import augment
from facelandmark import geometry
from pipeline import reader
from pipeline import views as views_lib
from training import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_export(workdir, export_dir, log=lambda *_: None, **kwargs):
  if 'tflite' in kwargs:
    kwargs['tflite'] = tuple(kwargs['tflite'])
  return export_lib.export(export_lib.ExportConfig(workdir, export_dir,
                                                   **kwargs), log=log)

@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('export'))
  _, shards = faces.make_faces(root)
  workdir = faces.train_tiny(shards, os.path.join(root, 'work'))
  export_dir = os.path.join(root, 'exported')
  metadata = run_export(workdir, export_dir,
                           tflite=tflite_lib.TFLITE_VARIANTS, data_dir=shards,
                           num_calibration=16)
  model, _, _ = workdir_lib.restore_model(workdir)
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
      runtime.tflite_name(v) for v in tflite_lib.TFLITE_VARIANTS]
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
  expected = numpy_views.crop_views(image, squares, faces.INPUT_SIZE)
  got = views_lib.crop_views_tf(tf.constant(image),
                                   tf.constant(squares, tf.float32),
                                   faces.INPUT_SIZE).numpy() * 255
  # OpenCV interpolates in fixed point (1/32 pixel) and rounds to uint8.
  np.testing.assert_allclose(got, expected, atol=2.5)
  assert np.mean(np.abs(got - expected)) < 0.5
  np.testing.assert_allclose(
      views_lib.view_squares_tf(tf.constant(squares[:2], tf.float32),
                                   1.25).numpy(),
      numpy_views.view_squares(squares[:2], 1.25), atol=1e-3)


def test_image_signature_matches_landmarker(setup):
  image, landmarks = faces.face_image(seed=3)
  boxes = np.array([geometry.landmark_box(p) for p in landmarks], np.float32)
  signatures = setup['loaded'].signatures
  got = signatures['image'](image=tf.constant(image),
                            boxes=tf.constant(boxes))['landmarks'].numpy()
  default = signatures['serving_default'](
      image=tf.constant(image), boxes=tf.constant(boxes))['landmarks'].numpy()
  expected = landmarker_lib.Landmarker.load(
      setup['export_dir'], prefer='saved_model').predict(image, boxes)
  np.testing.assert_allclose(got, expected, atol=0.05)
  np.testing.assert_array_equal(got, default)
  none = signatures['image'](image=tf.constant(image),
                             boxes=tf.zeros([0, 4]))['landmarks']
  assert none.shape == (0, 68, 2)


def test_tflite_variants(setup):
  views = setup['views']
  reference = setup['model'](views, training=False).numpy()
  outputs = {}
  for variant in tflite_lib.TFLITE_VARIANTS:
    path = os.path.join(setup['export_dir'], runtime.tflite_name(variant))
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
                                           runtime.tflite_name(v)))
           for v in tflite_lib.TFLITE_VARIANTS}
  assert sizes['int8'] < sizes['float16'] < sizes['float32']


@pytest.mark.parametrize('head', ['heatmap', 'pip'])
def test_map_heads_export_like_keras(setup, tmp_path, head):
  workdir = faces.train_tiny(setup['shards'], str(tmp_path / 'work'),
                             steps=100, head=head,
                             loss='pip' if head == 'pip' else 'mse')
  run_export(workdir, str(tmp_path / 'exported'), tflite=['float32'])
  model, _, _ = workdir_lib.restore_model(workdir)
  views = np.round(setup['views'] * 255) / 255
  expected = model(views, training=False).numpy()
  assert np.std(expected, axis=0).mean() > 2e-4
  saved = tf.saved_model.load(str(tmp_path / 'exported'))
  np.testing.assert_allclose(
      saved.signatures['views'](views=tf.constant(views, tf.float32))[
          'landmarks'].numpy(), expected, atol=1e-5)
  lite = landmarker_lib.Landmarker.load(str(
      tmp_path / 'exported' / runtime.tflite_name('float32')))
  np.testing.assert_allclose(
      lite.predict_views(np.round(setup['views'] * 255).astype(np.uint8)),
      expected, atol=1e-4)


def test_existing_export_is_kept_unless_overwrite(setup):
  with pytest.raises(FileExistsError, match='--overwrite'):
    run_export(setup['workdir'], setup['export_dir'])
  # A failing export (no shards to calibrate on) leaves the old one
  # whole and no temporary folder behind.
  before = sorted(os.listdir(setup['export_dir']))
  with pytest.raises(FileNotFoundError, match='manifest'):
    run_export(setup['workdir'], setup['export_dir'], tflite=['int8'],
                  data_dir=setup['root'], overwrite=True, log=lambda *_: None)
  assert sorted(os.listdir(setup['export_dir'])) == before
  assert sorted(os.listdir(setup['root'])) == ['exported', 'raw', 'shards',
                                               'work']


def test_overwrite_replaces(setup, tmp_path):
  target = str(tmp_path / 'again')
  os.makedirs(target)
  with open(os.path.join(target, 'stale.txt'), 'w') as f:
    f.write('old')
  run_export(setup['workdir'], target, overwrite=True, log=lambda *_: None)
  assert 'stale.txt' not in os.listdir(target)
  assert os.listdir(tmp_path) == ['again']
  with open(os.path.join(target, 'metadata.json')) as f:
    assert 'generated' in json.load(f)['comparison']['faces']


def test_bad_arguments_name_the_flag(setup, tmp_path):
  with pytest.raises(ValueError, match='--data_dir'):
    run_export(setup['workdir'], str(tmp_path / 'x'), tflite=['int8'])
  with pytest.raises(ValueError, match='--tflite'):
    run_export(setup['workdir'], str(tmp_path / 'x'), tflite=['int4'])
  assert not os.listdir(tmp_path)


def test_int8_calibrates_on_the_training_box(setup):
  # The workdir trained on --box=landmarks: calibration views are built on
  # the tight landmark box, not the box stored with the face.
  batch = next(iter(reader.make_dataset(setup['shards'], 'train', 1,
                                        training=True, seed=0,
                                        deterministic=True)))
  for box in views_lib.BOXES:
    (view,) = next(tflite_lib.representative_views(
        setup['shards'], faces.INPUT_SIZE, 1.25, box, 1))
    expected, _ = augment.center_view(
        batch['image'], batch['landmarks'],
        views_lib.face_boxes(batch['landmarks'], batch['box'], box),
        faces.INPUT_SIZE, 1.25)
    np.testing.assert_allclose(view, expected.numpy(), atol=1e-6)


def test_export_is_readable_by_others_and_cleans_up_killed_runs(setup,
                                                                 tmp_path):
  target = tmp_path / 'shared'
  stale = tmp_path / '.shared.tmp-999999999-abcd'  # no such process
  (stale / 'variables').mkdir(parents=True)
  running = tmp_path / f'.shared.tmp-{os.getpid()}-efgh'  # a live export
  running.mkdir()
  run_export(setup['workdir'], str(target))
  assert sorted(os.listdir(tmp_path)) == [running.name, 'shared']
  for root, dirs, names in os.walk(target):
    assert os.stat(root).st_mode & 0o005 == 0o005, root
    for name in names:
      assert os.stat(os.path.join(root, name)).st_mode & 0o004, name


def test_script_errors_are_one_line(setup, tmp_path):
  proc = subprocess.run(
      [sys.executable, 'export.py', f'--workdir={setup["root"]}',
       f'--export_dir={tmp_path / "x"}'], cwd=REPO, capture_output=True,
      text=True)
  assert proc.returncode != 0 and 'Traceback' not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith('export: ')
  assert 'config.json not found' in proc.stderr
