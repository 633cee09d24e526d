"""facelandmark/landmarker.py and model/landmarker.py: images and boxes it
takes, backends, which file it loads, and the refine pass."""

import json
import os
import re
import shutil

import numpy as np
import pytest

import faces
from facelandmark import geometry
from facelandmark import landmarker as runtime
from model import landmarker as landmarker_lib
from training import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED = os.path.join(REPO, 'pretrained')
FLOAT16 = 'landmarks_float16.tflite'
FACE, FACE_LANDMARKS = faces.face_image(seed=5)
FACE_BOXES = np.array([geometry.landmark_box(p) for p in FACE_LANDMARKS])


@pytest.fixture(scope='module')
def shipped():
  return landmarker_lib.Landmarker.load(PRETRAINED)


def recording_landmarker(size=16):
  """A Landmarker whose `views` list keeps every float view batch it ran."""
  views = []

  def views_fn(batch):
    views.append(batch)
    return np.full((len(batch), 68, 2), 0.5)

  landmarker = landmarker_lib.Landmarker(views_fn, size, 1.25)
  landmarker.views = views
  return landmarker


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


def _constant_landmarker(points, seen):
  def views_fn(views):
    seen.append(len(views))
    return np.broadcast_to(points, (len(views), 68, 2))

  return landmarker_lib.Landmarker(views_fn, 32, 1.25)


def test_refine_runs_on_the_landmark_box_until_it_settles():
  # Points spanning 0.1..0.9 of the view: a 1.25 view of their box is the
  # same view, so the second pass changes nothing and refining stops there.
  rng = np.random.default_rng(1)
  points = np.concatenate([[[0.1, 0.1], [0.9, 0.9]],
                           rng.uniform(0.2, 0.8, (66, 2))])
  seen = []
  landmarker = _constant_landmarker(points, seen)
  image = np.zeros((120, 160, 3), np.uint8)
  box = np.array([[10.0, 20.0, 50.0, 80.0]])
  first = landmarker.predict(image, box)
  refined = landmarker.predict(image, box, refine=True)
  np.testing.assert_allclose(
      refined, landmarker.predict(image, [geometry.landmark_box(first[0])]))
  assert seen == [1, 1, 1, 1]  # first; first + one refine; the check


def test_refine_stops_after_the_most_passes():
  # Points in 0.2..0.8 of the view: each pass shrinks the box by 0.75.
  points = np.random.default_rng(1).uniform(0.2, 0.8, (68, 2))
  seen = []
  landmarker = _constant_landmarker(points, seen)
  landmarker.predict(np.zeros((120, 160, 3), np.uint8),
                     [[10.0, 20.0, 50.0, 80.0]], refine=True)
  assert len(seen) == 1 + runtime.MAX_REFINE_PASSES


@pytest.mark.parametrize('boxes', [[], np.zeros((0, 4))])
def test_no_boxes_no_model_call(boxes):
  landmarker = landmarker_lib.Landmarker(lambda views: 1 / 0, 32, 1.25)
  got = landmarker.predict(np.zeros((8, 8, 3), np.uint8), boxes, refine=True)
  assert got.shape == (0, 68, 2)


def test_saved_model_tflite_and_keras_agree(tiny_export):
  image, landmarks = faces.face_image(seed=5)
  boxes = [geometry.landmark_box(p) for p in landmarks]
  saved = landmarker_lib.Landmarker.load(tiny_export['export_dir'],
                                         prefer='saved_model')
  tflite = landmarker_lib.Landmarker.load(
      os.path.join(tiny_export['export_dir'],
                   runtime.tflite_name('float32')),
      num_threads=1)
  model, cfg, _ = workdir_lib.restore_model(tiny_export['workdir'])
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
                           runtime.tflite_name('float32')), lonely)
  with pytest.raises(FileNotFoundError, match='metadata.json'):
    landmarker_lib.Landmarker.load(lonely)
  with open(tmp_path / 'metadata.json', 'w') as f:
    json.dump({'input_size': 64, 'view_scale': 1.25}, f)
  assert landmarker_lib.Landmarker.load(lonely).input_size == 64
  with pytest.raises(ValueError, match='neither'):
    landmarker_lib.Landmarker.load(str(tmp_path))


# Images.


def image_kinds(rgb):
  """{kind: (image, the uint8 RGB image it stands for)} for uint8 RGB `rgb`."""
  grey = np.repeat(rgb[..., :1], 3, axis=-1)
  return {
      'uint8 RGB': (rgb, rgb),
      'float64 in [0, 1]': (rgb / 255.0, rgb),
      'float32 in [0, 1]': ((rgb / 255.0).astype(np.float32), rgb),
      'uint16': (rgb.astype(np.uint16) * 257, rgb),
      'RGBA': (np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)]), rgb),
      'grey HxW': (rgb[..., 0], grey),
      'grey HxWx1': (rgb[..., :1], grey),
  }


KINDS = list(image_kinds(FACE))


@pytest.mark.parametrize('kind', KINDS)
def test_as_rgb_uint8_converts_each_documented_kind(kind):
  image, expected = image_kinds(FACE)[kind]
  got = runtime.as_rgb_uint8(image)
  assert got.dtype == np.uint8
  np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize('kind', KINDS)
def test_predict_crops_each_kind_like_its_uint8_rgb(kind):
  image, expected = image_kinds(FACE)[kind]
  landmarker = recording_landmarker()
  landmarker.predict(image, FACE_BOXES)
  landmarker.predict(expected, FACE_BOXES)
  got, want = landmarker.views
  assert got.shape == want.shape == (2, 16, 16, 3)
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize('kind', KINDS)
def test_shipped_model_gives_the_same_landmarks_for_each_kind(shipped, kind):
  image, expected = image_kinds(FACE)[kind]
  np.testing.assert_allclose(shipped.predict(image, FACE_BOXES),
                             shipped.predict(expected, FACE_BOXES), atol=1e-4)


@pytest.mark.parametrize('image, message', [
    (np.zeros((8, 8, 3), bool), 'bool'),
    (np.zeros((8, 8, 3), np.int8), 'int8'),
    (np.zeros((8, 8, 3), np.int64), 'int64'),
    (np.full((8, 8, 3), 200.0), r'\[0, 1\].*200.*divide'),
    (np.full((8, 8, 3), -0.5, np.float32), r'\[0, 1\]'),
    (np.full((8, 8, 3), np.nan), r'\[0, 1\]'),
    (np.zeros((0, 8, 3), np.uint8), 'empty'),
    (np.zeros(8, np.uint8), r'\(8,\)'),
    (np.zeros((2, 8, 8, 3), np.uint8), r'\(2, 8, 8, 3\)'),
    (np.zeros((8, 8, 2), np.uint8), '2 channels'),
    (np.zeros((8, 8, 5), np.uint8), '5 channels'),
])
def test_predict_refuses_other_images(image, message):
  with pytest.raises(ValueError, match=f'image.*{message}'):
    recording_landmarker().predict(image, [[1, 1, 6, 6]])


# Boxes.


@pytest.mark.parametrize('boxes, message', [
    ([[10, 20, 50, 80], [np.nan, 20, 50, 80]], r'box 1 \[nan, .*not finite'),
    ([[10, 20, np.inf, 80]], r'box 0 \[10.0, 20.0, inf, 80.0\].*not finite'),
    ([[10, 20, 10, 80]], r'box 0 .*width and height'),
    ([[10, 80, 50, 20]], r'box 0 .*width and height'),
    ([[10, 20, 50, 80], [0, 0, 2e4, 50]], r'box 1 .*100 times'),
    ([[1000, 1000, 1100, 1100]], r'box 0 .*outside the 160x120 image'),
    ([[-50, 20, 0, 80]], r'box 0 .*outside'),
    ([[1, 2, 3]], r'\[K, 4\].*\(1, 3\)'),
    ([10, 20, 50, 80], r'\[K, 4\].*\(4,\)'),
    ([[10, 20, 50, 'a']], r'\[K, 4\]'),
    ([[10, 20, 50], [10, 20, 50, 80]], r'\[K, 4\]'),
])
def test_predict_refuses_bad_boxes(boxes, message):
  with pytest.raises(ValueError, match=message):
    recording_landmarker().predict(np.zeros((120, 160, 3), np.uint8), boxes)


def test_check_boxes_gives_float64_k_by_4():
  got = runtime.check_boxes([[10, 20, 50, 80], [-5, -5, 5, 5]],
                                   (120, 160, 3))
  assert got.dtype == np.float64 and got.shape == (2, 4)
  assert runtime.check_boxes([], (120, 160)).shape == (0, 4)


# Loading: errors name the file.


def export_folder(tmp_path, metadata=None, **files):
  """tmp_path with the shipped metadata.json (or `metadata`) and `files`:
  {name: bytes}."""
  if metadata is None:
    shutil.copy(os.path.join(PRETRAINED, 'metadata.json'), tmp_path)
  else:
    (tmp_path / 'metadata.json').write_text(metadata)
  for name, data in files.items():
    (tmp_path / name).write_bytes(data)
  return str(tmp_path)


def shipped_bytes(name):
  with open(os.path.join(PRETRAINED, name), 'rb') as f:
    return f.read()


def test_load_names_a_broken_saved_model(tmp_path):
  folder = export_folder(tmp_path, **{'saved_model.pb': b'not a protobuf'})
  with pytest.raises(ValueError,
                     match=f'{re.escape(folder)} is not a SavedModel'):
    landmarker_lib.Landmarker.load(folder)


@pytest.mark.parametrize('data', [
    np.random.default_rng(0).bytes(4096), b'',
    # Truncated: TF Lite reading it by path would kill the process.
    shipped_bytes(FLOAT16)[:50_000],
], ids=['random bytes', 'empty', 'truncated'])
def test_load_names_a_tflite_file_that_is_not_a_flatbuffer(tmp_path, data):
  path = os.path.join(export_folder(tmp_path, **{FLOAT16: data}), FLOAT16)
  with pytest.raises(ValueError,
                     match=f'{re.escape(path)} is not a TF Lite flatbuffer'):
    landmarker_lib.Landmarker.load(path)


@pytest.mark.parametrize('text', ['', '{"input_size": 112,', '\x89PNG\xff'])
def test_load_names_a_metadata_file_that_is_not_json(tmp_path, text):
  folder = export_folder(tmp_path, metadata=None)
  (tmp_path / 'metadata.json').write_bytes(text.encode('latin-1'))
  with pytest.raises(ValueError, match=re.escape(
      os.path.join(folder, 'metadata.json')) + ' is not valid JSON: .+'):
    landmarker_lib.Landmarker.load(folder)


@pytest.mark.parametrize('fields, message', [
    ({'input_size': '112'}, 'input_size.*positive integer'),
    ({'input_size': 0}, 'input_size.*positive integer'),
    ({'input_size': 112.5}, 'input_size.*positive integer'),
    ({'input_size': True}, 'input_size.*positive integer'),
    ({'view_scale': 0}, 'view_scale.*positive number'),
    ({'view_scale': '1.25'}, 'view_scale.*positive number'),
    ({'view_scale': float('inf')}, 'view_scale.*positive number'),
    ({'view_scale': None}, 'view_scale.*positive number'),
])
def test_load_checks_the_metadata_types(tmp_path, fields, message):
  metadata = dict({'input_size': 112, 'view_scale': 1.25}, **fields)
  folder = export_folder(tmp_path, metadata=json.dumps(metadata))
  with pytest.raises(ValueError, match=re.escape(
      os.path.join(folder, 'metadata.json')) + f'.*{message}'):
    landmarker_lib.Landmarker.load(folder)


@pytest.mark.parametrize('text, message', [
    ('[112, 1.25]', 'not a JSON object'),
    ('{"view_scale": 1.25}', "no 'input_size'"),
    ('{"input_size": 112, "view_scale": 1.25, "comparison": {"files": '
     '[{"file": "saved_model"}]}}', 'comparison must be'),
    ('{"input_size": 112, "view_scale": 1.25, "comparison": []}',
     'comparison must be'),
    # Issue 19: null (or any other type) is named, not an AttributeError.
    ('{"input_size": 112, "view_scale": 1.25, "comparison": null}',
     'comparison must be .*got null'),
    ('{"input_size": 112, "view_scale": 1.25, "comparison": "none"}',
     'comparison must be'),
    ('{"input_size": 112, "view_scale": 1.25, "comparison": {"files": null}}',
     'comparison must be'),
])
def test_load_names_malformed_metadata(tmp_path, text, message):
  folder = export_folder(tmp_path, metadata=text)
  for load in (landmarker_lib.Landmarker.load, runtime.Landmarker.load):
    with pytest.raises(ValueError, match=f'metadata.json.*{message}'):
      load(folder)


# Loading: which file of an export folder.


@pytest.fixture
def shipped_copy(tmp_path):
  folder = str(tmp_path / 'export')
  shutil.copytree(PRETRAINED, folder)
  return folder


def test_load_folder_uses_float16_tflite_that_scores_like_the_saved_model(
    shipped_copy):
  landmarker = landmarker_lib.Landmarker.load(shipped_copy)
  assert landmarker.source == os.path.join(shipped_copy, FLOAT16)
  assert landmarker.metadata['path'] == landmarker.source


def test_load_folder_without_tflite_uses_the_saved_model(shipped_copy):
  os.remove(os.path.join(shipped_copy, FLOAT16))
  landmarker = landmarker_lib.Landmarker.load(shipped_copy)
  assert landmarker.source == landmarker.metadata['path'] == shipped_copy


def test_load_folder_uses_the_saved_model_when_float16_scores_worse(
    shipped_copy):
  meta_path = os.path.join(shipped_copy, 'metadata.json')
  with open(meta_path) as f:
    metadata = json.load(f)
  for row in metadata['comparison']['files']:
    if row['file'] == FLOAT16:
      row['nme'] *= 1.5
  with open(meta_path, 'w') as f:
    json.dump(metadata, f)
  assert landmarker_lib.Landmarker.load(shipped_copy).source == shipped_copy


def test_model_path_can_be_told_to_use_the_saved_model():
  metadata = runtime.read_metadata(PRETRAINED)
  assert landmarker_lib.model_path(PRETRAINED, metadata) == os.path.join(
      PRETRAINED, FLOAT16)
  assert landmarker_lib.model_path(PRETRAINED, metadata,
                                   prefer='saved_model') == PRETRAINED
  assert landmarker_lib.model_path(os.path.join(PRETRAINED, 'saved_model.pb'),
                                   metadata) == PRETRAINED


def test_load_refuses_an_unknown_preference():
  with pytest.raises(ValueError, match="prefer.*'fastest'"):
    landmarker_lib.Landmarker.load(PRETRAINED, prefer='smallest')


# The runtime: TF Lite only.


def test_runtime_loads_the_shipped_model_with_no_argument():
  landmarker = runtime.Landmarker.load()
  assert landmarker.source == runtime.SHIPPED_MODEL
  assert os.path.dirname(runtime.SHIPPED_MODEL) == os.path.join(
      REPO, 'facelandmark', 'models')
  points = landmarker.predict(FACE, FACE_BOXES)
  assert points.shape == (len(FACE_BOXES), 68, 2)


def test_pretrained_links_the_shipped_files_not_copies():
  for name in (FLOAT16, 'metadata.json'):
    assert os.path.samefile(os.path.join(PRETRAINED, name), os.path.join(
        os.path.dirname(runtime.SHIPPED_MODEL), name))


def test_runtime_folder_uses_the_equivalent_tflite_else_the_most_accurate(
    shipped_copy):
  assert runtime.Landmarker.load(shipped_copy).source == os.path.join(
      shipped_copy, FLOAT16)
  meta_path = os.path.join(shipped_copy, 'metadata.json')
  with open(meta_path) as f:
    metadata = json.load(f)
  del metadata['comparison']
  with open(meta_path, 'w') as f:
    json.dump(metadata, f)
  shutil.copy(os.path.join(shipped_copy, FLOAT16),
              os.path.join(shipped_copy, 'landmarks_float32.tflite'))
  assert runtime.Landmarker.load(shipped_copy).source == os.path.join(
      shipped_copy, 'landmarks_float32.tflite')


def test_runtime_refuses_a_saved_model_and_says_why(shipped_copy):
  for name in (FLOAT16,):
    os.remove(os.path.join(shipped_copy, name))
  with pytest.raises(ValueError, match=re.escape(shipped_copy) +
                     ' holds no .*export.py --tflite'):
    runtime.Landmarker.load(shipped_copy)
  pb = os.path.join(shipped_copy, 'saved_model.pb')
  with pytest.raises(ValueError, match='SavedModel is TensorFlow code'):
    runtime.Landmarker.load(pb)


def comparison(nmes):
  return [{'file': name, 'nme': nme} for name, nme in nmes.items()]


@pytest.mark.parametrize('nmes, present, expected', [
    # Without a comparison or a SavedModel score: the SavedModel.
    ({}, {FLOAT16}, None),
    ({FLOAT16: 0.05}, {FLOAT16}, None),
    # Within 1%, the fastest file present.
    ({'saved_model': 0.05, FLOAT16: 0.0504}, {FLOAT16}, FLOAT16),
    ({'saved_model': 0.05, FLOAT16: 0.0504}, set(), None),
    ({'saved_model': 0.05, FLOAT16: 0.0506}, {FLOAT16}, None),
    ({'saved_model': 0.05, 'landmarks_int8.tflite': 0.0502, FLOAT16: 0.05,
      'landmarks_float32.tflite': 0.05},
     {'landmarks_int8.tflite', FLOAT16, 'landmarks_float32.tflite'},
     'landmarks_int8.tflite'),
    ({'saved_model': 0.05, 'landmarks_int8.tflite': 0.06, FLOAT16: 0.05,
      'landmarks_float32.tflite': 0.05},
     {'landmarks_int8.tflite', FLOAT16, 'landmarks_float32.tflite'}, FLOAT16),
    ({'saved_model': 0.05, FLOAT16: 0.05, 'landmarks_float32.tflite': 0.05},
     {'landmarks_float32.tflite'}, 'landmarks_float32.tflite'),
])
def test_fastest_equivalent_file(nmes, present, expected):
  assert runtime.fastest_equivalent(comparison(nmes),
                                           present) == expected


def test_flip_averages_with_the_mirrored_view():
  # A net that sees a bright left half: points it places on that half's side
  # of its view. The mirrored view moves them to the other side; mapped back
  # and re-indexed, they agree with the direct ones only if x -> 1 - x and
  # the permutation are applied.
  rng = np.random.default_rng(2)
  base = rng.uniform(0.2, 0.8, (68, 2))

  def views_fn(views):
    left_brighter = views[:, :, :views.shape[2] // 2].mean(axis=(1, 2, 3)) > (
        views[:, :, views.shape[2] // 2:].mean(axis=(1, 2, 3)))
    out = np.broadcast_to(base, (len(views), 68, 2)).copy()
    mirrored = base[list(geometry.MIRROR_PERMUTATION)] * [-1, 1] + [1, 0]
    out[~left_brighter] = mirrored
    return out

  landmarker = landmarker_lib.Landmarker(views_fn, 32, 1.25)
  image = np.zeros((64, 64, 3), np.uint8)
  image[:, :32] = 200
  box = [[8.0, 8.0, 56.0, 56.0]]
  np.testing.assert_allclose(landmarker.predict(image, box, flip=True),
                             landmarker.predict(image, box), atol=1e-9)


def test_the_same_face_at_four_times_the_resolution_gives_the_same_points(
    shipped):
  """Views of large faces come from an image pyramid, as training's crops
  were area-downscaled: a 4x photo with its fine detail (sensor noise here) is
  seen as its 1x reduction is, not sampled every 4th pixel."""
  import cv2  # pylint: disable=import-outside-toplevel
  photo = cv2.imread(os.path.join(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), 'assets', 'eileen_collins_nasa.jpg'))
  noise = np.random.default_rng(0).normal(0, 12, (1024, 1024, 3))
  large = np.clip(cv2.resize(photo, (1024, 1024), interpolation=cv2.INTER_CUBIC)
                  + noise, 0, 255).astype(np.uint8)
  small = cv2.resize(large, (256, 256), interpolation=cv2.INTER_AREA)
  box = geometry.landmark_box(shipped.predict(small, [[60, 30, 190, 180]])[0])
  assert (box[2] - box[0]) * 1.25 / shipped.input_size > 1  # no upsampling
  points = shipped.predict(small, [box])[0]
  large_points = shipped.predict(large, [np.multiply(box, 4)])[0] / 4
  eyes = np.linalg.norm(points[36] - points[45])
  error = np.mean(np.linalg.norm(large_points - points, axis=1)) / eyes
  assert error < 0.005, error
