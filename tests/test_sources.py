"""Reading 300-W annotations: both layouts, the split, all kinds of bad face."""

import os

import cv2
import numpy as np
import pytest

from facelandmark import geometry
from pipeline import sources
from pipeline import synthetic


def _write(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write(text)


def _write_image(path, width=64, height=48):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  cv2.imwrite(str(path), np.full((height, width, 3), 128, np.uint8))


def _face_points(x0=10.0, y0=8.0):
  """68 distinct points in a 30 x 20 px area (corner coordinates)."""
  k = np.arange(geometry.NUM_LANDMARKS)
  return np.stack([x0 + k % 17 * 30 / 16, y0 + k // 17 * 20 / 3], -1)


def _pts(points):
  """A .pts file for points given as written (1-based pixel centres)."""
  lines = [f'{x} {y}' for x, y in points]
  return '\n'.join(['version: 1', f'n_points:  {len(lines)}', '{', *lines, '}'])


def _xml(images, root='<dataset><images>{}</images></dataset>'):
  """dlib imglab XML; images: [(file, [boxes as (attrs, points 0-based)])]."""
  out = []
  for file, boxes in images:
    out.append(f"<image file='{file}'>")
    for attrs, points in boxes:
      out.append(f'<box {attrs}>')
      out += [f"<part name='{k:02d}' x='{x}' y='{y}'/>"
              for k, (x, y) in enumerate(points)]
      out.append('</box>')
    out.append('</image>')
  return root.format('\n'.join(out))


_BOX = "top='8' left='10' width='30' height='21'"


def _by_key(dataset):
  return {(f.rel_path, f.face_index): f for f in dataset.train + dataset.val}


def test_both_layouts_give_the_drawn_landmarks(tmp_path):
  truth = synthetic.write_dataset(tmp_path, 4, layout='both', seed=3,
                                  width=96, height=80, max_faces_per_image=2)
  assert max(len(faces) for _, faces in truth) == 2  # several faces per image
  from_pts = _by_key(sources.load(tmp_path, 'pts'))
  from_xml = _by_key(sources.load(tmp_path, 'xml'))
  expected = {(rel, k): lm
              for rel, faces in truth for k, lm in enumerate(faces)}
  assert from_pts.keys() == from_xml.keys() == expected.keys()
  for key, landmarks in expected.items():
    np.testing.assert_allclose(from_pts[key].landmarks, landmarks, atol=1e-6)
    np.testing.assert_allclose(from_xml[key].landmarks, landmarks, atol=1e-6)
    np.testing.assert_allclose(from_pts[key].box,
                               geometry.landmark_box(landmarks), atol=1e-6)
    assert from_pts[key].subset == key[0].rpartition('/')[0]
    assert os.path.isabs(from_pts[key].image_path)


def test_pts_is_one_based_and_xml_zero_based(tmp_path):
  # The same pixel: column 10, row 20, i.e. corner coordinates (10.5, 20.5).
  points = _face_points()
  _write_image(tmp_path / 'pts' / 'a.jpg')
  _write(str(tmp_path / 'pts' / 'a.pts'),
         _pts([(11, 21)] + list(geometry.to_pts(points[1:]))))
  _write_image(tmp_path / 'xml' / 'a.jpg')
  xml_points = [(10, 20)] + list(geometry.to_dlib_xml(points[1:]))
  _write(str(tmp_path / 'xml' / 'labels.xml'),
         _xml([('a.jpg', [(_BOX, xml_points)])]))
  pts_face = sources.load(tmp_path / 'pts', 'pts', val_fraction=0).train[0]
  xml_face = sources.load(tmp_path / 'xml', 'xml', val_fraction=0).train[0]
  np.testing.assert_allclose(pts_face.landmarks[0], [10.5, 20.5])
  np.testing.assert_allclose(xml_face.landmarks[0], [10.5, 20.5])
  np.testing.assert_allclose(xml_face.box, [10, 8, 40, 29])  # whole pixels
  assert xml_face.subset == 'xml'  # top-level images: the folder's name


def test_pts_image_lookup_same_stem_then_shared(tmp_path):
  text = synthetic.pts_text(_face_points())
  _write_image(tmp_path / 'AFW' / '111_1.JPG')       # one image per .pts
  _write(str(tmp_path / 'AFW' / '111_1.pts'), text)
  _write_image(tmp_path / 'AFW' / '222.png')         # original AFW: shared
  for n in (1, 2, 10):
    _write(str(tmp_path / 'AFW' / f'222_{n}.pts'), text)
  _write(str(tmp_path / 'AFW' / '333_1.pts'), text)  # no image at all
  data = sources.load(tmp_path, 'pts', val_fraction=0)
  assert sorted(_by_key(data)) == [('AFW/111_1.JPG', 0), ('AFW/222.png', 0),
                                   ('AFW/222.png', 1), ('AFW/222.png', 2)]
  assert {f.subset for f in data.train} == {'afw'}
  [missing] = data.skipped
  assert missing.file == 'AFW/333_1.pts' and 'no image' in missing.reason


@pytest.mark.parametrize('text, reason', [
    ('version: 2\nn_points: 68\n{\n}\n', 'header'),
    ('n_points: 68\n{\n1 2\n}\n', 'header'),
    ('version: 1\nn_points: 68\n1 2\n', 'no {'),
    ('version: 1\nn_points: 68\n{\n1 2\n}\n', 'n_points is 68 but 1'),
    ('version: 1\nn_points: 1\n{\n1 two\n}\n', 'non-numeric'),
    ('version: 1\nn_points: 1\n{\n1 2 3\n}\n', 'exactly two numbers'),
    ('version: 1\nn_points: 12\n{\n' + '1 2\n' * 12 + '}\n',
     '12 points, expected 68'),
])
def test_bad_pts_files_are_skipped_with_reason(tmp_path, text, reason):
  _write_image(tmp_path / 'lfpw' / 'good.jpg')
  _write(str(tmp_path / 'lfpw' / 'good.pts'),
         synthetic.pts_text(_face_points()))
  _write_image(tmp_path / 'lfpw' / 'bad.jpg')
  _write(str(tmp_path / 'lfpw' / 'bad.pts'), text)
  data = sources.load(tmp_path, 'pts', val_fraction=0)
  assert [f.rel_path for f in data.train] == ['lfpw/good.jpg']
  [bad] = data.skipped
  assert reason in bad.reason
  assert bad.message.startswith('lfpw/bad.pts (face 0): ')


@pytest.mark.parametrize('change, reason', [
    (lambda p: np.where(np.arange(68)[:, None] == 5, np.nan, p), 'NaN'),
    (lambda p: np.where(np.arange(68)[:, None] == 5, np.inf, p), 'inf'),
    (lambda p: p * 0 + 7, 'zero-size'),
    (lambda p: p * [1, 0] + [0, 7], 'zero-size'),
])
def test_bad_points_are_skipped(tmp_path, change, reason):
  _write_image(tmp_path / 'ibug' / 'a.jpg')
  _write(str(tmp_path / 'ibug' / 'a.pts'),
         synthetic.pts_text(change(_face_points())))
  _write_image(tmp_path / 'ibug' / 'b.jpg')
  _write(str(tmp_path / 'ibug' / 'b.pts'), synthetic.pts_text(_face_points()))
  data = sources.load(tmp_path, 'pts', val_fraction=0)
  [bad] = data.skipped
  assert bad.file == 'ibug/a.pts' and reason in bad.reason


def test_xml_ignored_eyes_only_and_bad_boxes(tmp_path):
  points = geometry.to_dlib_xml(_face_points())
  eyes = [(x, y) for x, y in points[36:48]]
  _write(str(tmp_path / 'labels.xml'), _xml([
      ('afw/a.jpg', [(_BOX, points),
                     (_BOX + " ignore='1'", points),
                     (_BOX, eyes),
                     ("top='8' left='10' width='0' height='21'", points),
                     ("top='8' width='30' height='21'", points)]),
  ]))
  _write_image(tmp_path / 'afw' / 'a.jpg')
  data = sources.load(tmp_path)
  assert data.layout == 'xml' and data.ignored_boxes == 1
  assert [(f.rel_path, f.face_index) for f in data.train + data.val] == [
      ('afw/a.jpg', 0)]
  reasons = {s.face_index: s.reason for s in data.skipped}
  assert reasons[1] == ('labels.xml: 12 points, expected 68 (missing part '
                        'names 12-67)')
  assert 'zero-size' in reasons[2]
  assert reasons[3] == 'labels.xml: <box> without left='
  assert all(s.file == 'afw/a.jpg' for s in data.skipped)


def test_dlib_eyes_only_file_yields_only_skipped_faces(tmp_path):
  eyes = geometry.to_dlib_xml(_face_points())[36:48]
  _write(str(tmp_path / 'labels_ibug_300W_test_eyes.xml'), _xml(
      [(f'helen/trainset/{i}_1.jpg', [(_BOX, eyes)]) for i in range(3)]))
  data = sources.load(tmp_path)
  assert not data.train and not data.val
  assert [s.reason for s in data.skipped] == [
      'labels_ibug_300W_test_eyes.xml: 12 points, expected 68 (missing part '
      'names 12-67)'] * 3


@pytest.mark.parametrize('text', ['<dataset><images><image>', '<notdlib/>'])
def test_malformed_xml_is_an_error_naming_the_file(tmp_path, text):
  _write(str(tmp_path / 'labels.xml'), text)
  with pytest.raises(sources.DataError, match='labels.xml'):
    sources.load(tmp_path)


def test_missing_empty_or_unannotated_folder_is_an_error(tmp_path):
  with pytest.raises(sources.DataError, match='nowhere.*does not exist'):
    sources.load(tmp_path / 'nowhere')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(sources.DataError, match='empty.*is empty'):
    sources.load(tmp_path / 'empty')
  _write_image(tmp_path / 'images' / 'a.jpg')
  with pytest.raises(sources.DataError, match='no pts annotations.*images'):
    sources.load(tmp_path / 'images')
  with pytest.raises(sources.DataError, match='--layout=json'):
    sources.load(tmp_path / 'images', 'json')


def test_layout_detection(tmp_path):
  synthetic.write_dataset(tmp_path, 1, layout='both', width=64, height=64)
  assert sources.detect_layout(tmp_path) == 'xml'
  os.rename(tmp_path / 'labels.xml', tmp_path / 'other.xml')
  assert sources.detect_layout(tmp_path) == 'pts'
  assert sources.load(tmp_path, 'xml').split['annotations'] == 'other.xml'


def test_split_is_by_image_and_independent_of_order(tmp_path):
  synthetic.write_dataset(tmp_path, 24, layout='pts', seed=1, width=64,
                          height=64, max_faces_per_image=3)
  data = sources.load(tmp_path, 'pts', val_fraction=0.3)
  train = {f.rel_path for f in data.train}
  val = {f.rel_path for f in data.val}
  assert train and val and not train & val
  assert val == {r for r in train | val if sources.is_val(r, 0.3)}
  # Larger val fractions only move images from train to val.
  assert val <= {f.rel_path for f in sources.load(tmp_path, 'pts', 0.6).val}


def test_dlib_train_and_test_files_are_the_split(tmp_path):
  points = geometry.to_dlib_xml(_face_points())
  _write(str(tmp_path / sources.DLIB_TRAIN_XML),
         _xml([(f'afw/{i}.jpg', [(_BOX, points)]) for i in range(5)]))
  _write(str(tmp_path / sources.DLIB_TEST_XML),
         _xml([('ibug/t.jpg', [(_BOX, points), (_BOX, points)])]))
  data = sources.load(tmp_path, val_fraction=0.5)
  assert data.split == {'method': 'dlib_xml', 'train': sources.DLIB_TRAIN_XML,
                        'val': sources.DLIB_TEST_XML}
  assert [f.rel_path for f in data.train] == [f'afw/{i}.jpg' for i in range(5)]
  assert [(f.rel_path, f.face_index) for f in data.val] == [
      ('ibug/t.jpg', 0), ('ibug/t.jpg', 1)]


def _jpeg_bytes():
  image = np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8)
  return cv2.imencode('.jpg', image)[1].tobytes()


@pytest.mark.parametrize('content, reason', [
    (None, 'No such file'),
    (b'', 'cannot decode'),
    (b'not an image at all', 'cannot decode'),
    (_jpeg_bytes()[:-300], 'cannot decode|truncated JPEG'),  # OpenCV 5 | 4
])
def test_unreadable_images(tmp_path, content, reason):
  path = tmp_path / 'x.jpg'
  if content is not None:
    path.write_bytes(content)
  with pytest.raises(sources.BadImage, match=reason):
    sources.read_image(str(path))


def test_truncated_jpeg_check(tmp_path, monkeypatch):
  # OpenCV 4 returns a grey-filled image for a truncated JPEG.
  monkeypatch.setattr(sources.cv2, 'imdecode',
                      lambda *_: np.zeros((40, 40, 3), np.uint8))
  path = tmp_path / 'x.jpg'
  path.write_bytes(_jpeg_bytes()[:-300])
  with pytest.raises(sources.BadImage, match='truncated JPEG'):
    sources.read_image(str(path))
  path.write_bytes(_jpeg_bytes())
  assert sources.read_image(str(path)).shape == (40, 40, 3)


def test_landmarks_far_outside_the_image():
  face = sources.Face('/a.jpg', 'a.jpg', 'x', 0, _face_points(),
                      geometry.landmark_box(_face_points()))  # 30 px wide
  assert sources.check_in_image(face, 48, 64) is None
  assert sources.check_in_image(face, 48, 30) is None  # 10 px out: a chin
  assert 'outside the 20x48 image' in sources.check_in_image(face, 48, 20)


def test_landmarks_or_box_far_outside_are_judged_against_the_image():
  # Outliers enlarge their own face box: the limit is a share of the image.
  points = _face_points()
  points[0] = [5000, 10]
  face = sources.Face('/a.jpg', 'a.jpg', 'x', 0, points,
                      geometry.landmark_box(points))
  assert 'landmarks up to 4936 px outside the 64x48 image' in (
      sources.check_in_image(face, 48, 64))
  box = np.array([10.0, 8.0, 1e6, 29.0])  # a dlib box can be absurd alone
  face = sources.Face('/a.jpg', 'a.jpg', 'x', 0, _face_points(), box)
  assert 'face box up to 999936 px outside' in sources.check_in_image(
      face, 48, 64)


@pytest.mark.parametrize('old, new, reason', [
    ("name='05'", "name='04'", "duplicate part name '04'"),
    ("name='05'", "name='five'", "non-integer part name 'five'"),
    ("name='67'", "name='68'", "part name '68' outside 00..67"),
    ("x='", "x='left", "<part> x='left"),
])
def test_xml_part_names_are_00_to_67_each_once(tmp_path, old, new, reason):
  points = geometry.to_dlib_xml(_face_points())
  text = _xml([('a.jpg', [(_BOX, points)]), ('b.jpg', [(_BOX, points)])])
  b_at = text.index("file='b.jpg'")
  _write(str(tmp_path / 'labels.xml'),
         text[:b_at] + text[b_at:].replace(old, new, 1))
  data = sources.load(tmp_path, val_fraction=0)
  assert [f.rel_path for f in data.train] == ['a.jpg']
  [skipped] = data.skipped
  assert skipped.file == 'b.jpg' and reason in skipped.reason
  assert skipped.reason.startswith('labels.xml: ')


def test_pts_with_a_utf8_bom_is_read(tmp_path):
  _write_image(tmp_path / 'helen' / 'a.jpg')
  (tmp_path / 'helen' / 'a.pts').write_text(
      synthetic.pts_text(_face_points()), encoding='utf-8-sig')
  data = sources.load(tmp_path, 'pts', val_fraction=0)
  assert not data.skipped
  np.testing.assert_allclose(data.train[0].landmarks, _face_points(),
                             atol=1e-6)


@pytest.mark.parametrize('file', ['../x.jpg', 'afw/../../x.jpg', '/tmp/x.jpg'])
def test_xml_image_outside_the_data_folder_is_skipped(tmp_path, file):
  points = geometry.to_dlib_xml(_face_points())
  _write(str(tmp_path / 'data' / 'labels.xml'), _xml(
      [('afw/a.jpg', [(_BOX, points)]), (file, [(_BOX, points)])]))
  data = sources.load(tmp_path / 'data', val_fraction=0)
  assert [f.rel_path for f in data.train] == ['afw/a.jpg']
  [skipped] = data.skipped
  assert skipped.file == file
  assert f"image path '{file}' is outside the data folder" in skipped.reason


def test_linked_folders_are_read_once_even_in_a_loop(tmp_path):
  # 300-W on another disk, linked into the data folder.
  elsewhere = tmp_path / 'disk2' / 'lfpw'
  _write_image(elsewhere / 'a.jpg')
  _write(str(elsewhere / 'a.pts'), synthetic.pts_text(_face_points()))
  os.symlink(tmp_path / 'disk2', elsewhere / 'loop')  # a link to a parent
  (tmp_path / 'data').mkdir()
  os.symlink(tmp_path / 'disk2', tmp_path / 'data' / 'linked')
  data = sources.load(tmp_path / 'data', 'pts', val_fraction=0)
  assert [f.rel_path for f in data.train] == ['linked/lfpw/a.jpg']


@pytest.mark.parametrize('all_to', ['train', 'val'])
def test_all_to_puts_every_face_in_one_split(tmp_path, all_to):
  points = geometry.to_dlib_xml(_face_points())
  _write(str(tmp_path / sources.DLIB_TEST_XML),
         _xml([(f'ibug/{i}.jpg', [(_BOX, points)]) for i in range(6)]))
  hashed = sources.load(tmp_path, val_fraction=0.5)
  assert hashed.train and hashed.val  # without all_to: split by hash
  data = sources.load(tmp_path, val_fraction=0.5, all_to=all_to)
  assert len(getattr(data, all_to)) == 6
  assert not getattr(data, {'train': 'val', 'val': 'train'}[all_to])
  assert data.split == {'method': 'all_to', 'all_to': all_to,
                        'annotations': sources.DLIB_TEST_XML}
  with pytest.raises(sources.DataError, match='--all_to=test: expected'):
    sources.load(tmp_path, all_to='test')
