"""model/landmarker.py: view geometry, backends and the refine pass."""

import json
import os
import shutil

import numpy as np
import pytest

import export
import faces
import train_loop
from model import landmarker as landmarker_lib
from pipeline import geometry


def test_crop_views_samples_at_view_pixel_centres():
  # Red = 2x and green = 2y at pixel centres: bilinear sampling of a linear
  # ramp is exact, so each view pixel shows where it was sampled.
  height, width = 90, 120
  ys, xs = np.mgrid[0:height, 0:width] + 0.5
  image = np.stack([2 * xs, 2 * ys, np.zeros_like(xs)], -1).astype(np.uint8)
  square = np.array([10.3, 20.7, 60.3, 70.7])
  size = 25
  (view,) = landmarker_lib.crop_views(image, [square], size)
  diagonal = np.repeat(np.arange(size)[:, None] + 0.5, 2, axis=1)
  centres = geometry.from_crop(diagonal, square, size)  # (x, y) of (u, u)
  np.testing.assert_allclose(view[0, :, 0], 2 * centres[:, 0], atol=0.6)
  np.testing.assert_allclose(view[:, 0, 1], 2 * centres[:, 1], atol=0.6)


def test_crop_views_is_black_outside_the_image():
  image = np.full((40, 40, 3), 200, np.uint8)
  (view,) = landmarker_lib.crop_views(image, [[-40, -40, 40, 40]], 16)
  assert view[:7, :7].max() == 0 and view[9:, 9:].min() == 200


def test_predict_maps_view_points_to_image_pixels():
  points = np.random.default_rng(0).uniform(0.2, 0.8, (68, 2))
  landmarker = landmarker_lib.Landmarker(
      lambda views: np.broadcast_to(points, (len(views), 68, 2)), 32, 1.25)
  boxes = np.array([[10.0, 20.0, 50.0, 80.0], [100.0, 5.0, 130.0, 25.0]])
  got = landmarker.predict(np.zeros((120, 160, 3), np.uint8), boxes)
  for box, face in zip(boxes, got):
    # Side 1.25 * max(w, h), centred on the box.
    square = geometry.square_around(box, 1.25)
    np.testing.assert_allclose(face,
                               square[:2] + points * (square[2] - square[0]))


def test_refine_runs_again_on_the_first_landmark_box():
  points = np.random.default_rng(1).uniform(0.2, 0.8, (68, 2))
  seen = []

  def views_fn(views):
    seen.append(len(views))
    return np.broadcast_to(points, (len(views), 68, 2))

  landmarker = landmarker_lib.Landmarker(views_fn, 32, 1.25)
  image = np.zeros((120, 160, 3), np.uint8)
  box = np.array([[10.0, 20.0, 50.0, 80.0]])
  first = landmarker.predict(image, box)
  refined = landmarker.predict(image, box, refine=True)
  np.testing.assert_allclose(
      refined, landmarker.predict(image, [geometry.landmark_box(first[0])]))
  assert seen == [1, 1, 1, 1]


def test_no_boxes_no_model_call():
  landmarker = landmarker_lib.Landmarker(lambda views: 1 / 0, 32, 1.25)
  got = landmarker.predict(np.zeros((8, 8, 3), np.uint8), np.zeros((0, 4)),
                           refine=True)
  assert got.shape == (0, 68, 2)


def test_saved_model_tflite_and_keras_agree(tiny_export):
  image, landmarks = faces.face_image(seed=5)
  boxes = [geometry.landmark_box(p) for p in landmarks]
  saved = landmarker_lib.Landmarker.load(tiny_export['export_dir'])
  tflite = landmarker_lib.Landmarker.load(
      os.path.join(tiny_export['export_dir'], export.tflite_name('float32')),
      num_threads=1)
  model, cfg, _ = train_loop.restore_model(tiny_export['workdir'])
  keras = landmarker_lib.Landmarker.from_keras(model, cfg.input_size,
                                               cfg.view_scale)
  assert (saved.input_size, saved.view_scale) == (64, 1.25)
  expected = saved.predict(image, boxes, refine=True)
  assert expected.shape == (2, 68, 2)
  np.testing.assert_allclose(tflite.predict(image, boxes, refine=True),
                             expected, atol=1e-3)
  np.testing.assert_allclose(keras.predict(image, boxes, refine=True),
                             expected, atol=1e-3)


def test_load_errors_say_what_is_missing(tiny_export, tmp_path):
  with pytest.raises(FileNotFoundError, match='export.py'):
    landmarker_lib.Landmarker.load(str(tmp_path / 'nothing'))
  lonely = str(tmp_path / 'model.tflite')
  shutil.copy(os.path.join(tiny_export['export_dir'],
                           export.tflite_name('float32')), lonely)
  with pytest.raises(FileNotFoundError, match='metadata.json'):
    landmarker_lib.Landmarker.load(lonely)
  with open(tmp_path / 'metadata.json', 'w') as f:
    json.dump({'input_size': 64, 'view_scale': 1.25}, f)
  assert landmarker_lib.Landmarker.load(lonely).input_size == 64
  with pytest.raises(ValueError, match='neither'):
    landmarker_lib.Landmarker.load(str(tmp_path))
