"""Converting 300-W to TFRecords: crops, round trip, safety, bad input."""

import glob
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest
import tensorflow as tf

from facelandmark import geometry
from pipeline import prepare
from pipeline import records
from pipeline import sources
from pipeline import synthetic


def _prepare(data_dir, output_dir, **kwargs):
  small = dict(num_shards=2, image_size=48, num_workers=1, progress=False)
  return prepare.prepare(data_dir, output_dir, **{**small, **kwargs})


def _read(output_dir, split):
  files = sorted(tf.io.gfile.glob(records.shard_pattern(output_dir, split)))
  dataset = tf.data.TFRecordDataset(files).map(records.parse_face)
  return [{k: v.numpy() for k, v in face.items()} for face in dataset]


def _files(folder):
  """{name: bytes} of every file in a folder."""
  return {n: (folder / n).read_bytes() for n in sorted(os.listdir(folder))}


def _face(landmarks):
  return sources.Face('/x.jpg', 'x.jpg', 'x', 0, np.asarray(landmarks, float),
                      geometry.landmark_box(landmarks))


def _points_in(box, first):
  """68 landmarks spanning `box` exactly, point 0 at `first`."""
  x0, y0, x1, y1 = box
  t = np.linspace(0, 1, geometry.NUM_LANDMARKS)
  points = np.stack([x0 + t * (x1 - x0), y0 + t * (y1 - y0)], -1)
  points[:3] = [first, [x0, y0], [x1, y1]]
  return points


# Crop geometry.


def test_crop_square_has_integer_bounds_around_the_box():
  crop = prepare.crop_square(np.array([10.3, 20.7, 30.1, 35.2]), 2.0)
  np.testing.assert_array_equal(crop, np.round(crop))
  assert crop[2] - crop[0] == crop[3] - crop[1] == 40  # 2 x 19.8, rounded
  np.testing.assert_allclose((crop[:2] + crop[2:]) / 2, [20.2, 27.95], atol=0.5)


@pytest.mark.parametrize('size', [20, 40, 10])  # same, enlarged, shrunk
def test_a_landmark_at_a_pixel_lands_on_that_crop_pixel(size):
  image = np.zeros((80, 100, 3), np.uint8)
  image[22:24, 36:38] = 255  # 2x2 block centred on corner point (37, 23)
  face = _face(_points_in([30, 15, 50, 35], first=[37, 23]))
  spec = prepare.CropSpec(size, crop_context=1.0, jpeg_quality=100)
  crop = prepare.crop_face(image, face, spec)
  np.testing.assert_array_equal(crop['crop'], [30, 15, 50, 35])
  np.testing.assert_allclose(crop['landmarks'][0], np.array([7, 8]) * size / 20)
  np.testing.assert_allclose(crop['box'], [0, 0, size, size])
  decoded = cv2.imdecode(np.frombuffer(crop['jpeg'], np.uint8),
                         cv2.IMREAD_GRAYSCALE).astype(float)
  assert decoded.shape == (size, size)
  # The bright block's centre of mass is the landmark.
  ys, xs = np.mgrid[:size, :size] + 0.5
  weights = np.clip(decoded - 20, 0, None)
  centre = [np.sum(xs * weights) / weights.sum(),
            np.sum(ys * weights) / weights.sum()]
  np.testing.assert_allclose(centre, crop['landmarks'][0],
                             atol=0.15 * size / 20)


def test_crop_is_padded_black_where_it_leaves_the_image():
  image = np.full((60, 60, 3), 200, np.uint8)
  face = _face(_points_in([0, 0, 20, 20], first=[10, 10]))  # corner face
  crop = prepare.crop_face(image, face, prepare.CropSpec(40, 2.0, 100))
  np.testing.assert_array_equal(crop['crop'], [-10, -10, 30, 30])
  decoded = cv2.imdecode(np.frombuffer(crop['jpeg'], np.uint8),
                         cv2.IMREAD_GRAYSCALE).astype(int)
  assert np.abs(decoded[:8, :] - 0).max() <= 3   # above the image
  assert np.abs(decoded[:, :8] - 0).max() <= 3   # left of it
  assert np.abs(decoded[12:, 12:] - 200).max() <= 3
  np.testing.assert_allclose(crop['landmarks'][0], [20, 20])


def test_stored_jpeg_decodes_to_rgb():
  red_bgr = np.zeros((30, 30, 3), np.uint8)
  red_bgr[..., 2] = 255
  face = _face(_points_in([5, 5, 25, 25], first=[15, 15]))
  crop = prepare.crop_face(red_bgr, face, prepare.CropSpec(16, 1.0, 95))
  rgb = tf.io.decode_jpeg(crop['jpeg']).numpy().astype(int)
  np.testing.assert_allclose(rgb.mean(axis=(0, 1)), [254, 0, 0], atol=3)


# Whole runs on generated faces.


@pytest.fixture
def faces_dir(tmp_path):
  """8 generated images, 1-2 faces each, in both layouts."""
  folder = tmp_path / 'faces'
  truth = synthetic.write_dataset(folder, 8, layout='both', seed=5, width=96,
                                  height=80, max_faces_per_image=2)
  return folder, {(rel, k): lm for rel, faces in truth
                  for k, lm in enumerate(faces)}


@pytest.mark.parametrize('layout', ['pts', 'xml'])
def test_records_round_trip(faces_dir, tmp_path, layout, capsys):
  data_dir, truth = faces_dir
  manifest = _prepare(data_dir, tmp_path / 'out', layout=layout,
                      val_fraction=0.3)
  faces = _read(tmp_path / 'out', 'train') + _read(tmp_path / 'out', 'val')
  assert len(faces) == len(truth) == manifest['counts']['faces_written']
  for face in faces:
    landmarks = truth[face['source'].decode(), face['face_index']]
    assert face['image'].shape == (48, 48, 3)
    x0, y0, x1, y1 = face['crop']
    assert x1 - x0 == y1 - y0
    np.testing.assert_allclose(  # exact up to float32 storage
        face['landmarks'], geometry.to_crop(landmarks, face['crop'], 48),
        rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(
        geometry.from_crop(face['landmarks'], face['crop'], 48), landmarks,
        atol=1e-3)
    assert face['subset'].decode() == face['source'].decode().rpartition('/')[0]
  assert manifest['layout'] == layout
  assert manifest['schema_version'] == records.SCHEMA_VERSION
  assert manifest['split'] | {'annotations': 0} == {
      'method': 'hash', 'val_fraction': 0.3, 'annotations': 0}
  with open(tmp_path / 'out' / 'manifest.json') as f:
    assert json.load(f) == manifest
  assert 'faces written' in capsys.readouterr().out


def test_split_is_by_image(faces_dir, tmp_path):
  data_dir, _ = faces_dir
  manifest = _prepare(data_dir, tmp_path / 'out', layout='pts',
                      val_fraction=0.4)
  train = {f['source'] for f in _read(tmp_path / 'out', 'train')}
  val = {f['source'] for f in _read(tmp_path / 'out', 'val')}
  assert train and val and not train & val
  for split, images in (('train', train), ('val', val)):
    info = manifest['splits'][split]
    assert info['images'] == len(images)
    assert sum(info['subsets'].values()) == info['faces']
    assert info['shards'] == sorted(
        os.path.basename(p) for p in
        tf.io.gfile.glob(records.shard_pattern(tmp_path / 'out', split)))


def test_same_input_gives_same_bytes(faces_dir, tmp_path):
  data_dir, _ = faces_dir
  _prepare(data_dir, tmp_path / 'a', layout='pts', num_workers=1)
  _prepare(data_dir, tmp_path / 'b', layout='pts', num_workers=2)
  assert _files(tmp_path / 'a') == _files(tmp_path / 'b')


def test_dlib_train_test_files_are_the_split(faces_dir, tmp_path):
  data_dir, truth = faces_dir
  images = list(ET.parse(data_dir / 'labels.xml').getroot().find('images'))
  for name, part in ((sources.DLIB_TRAIN_XML, images[:6]),
                     (sources.DLIB_TEST_XML, images[6:])):
    root = ET.Element('dataset')
    ET.SubElement(root, 'images').extend(part)
    ET.ElementTree(root).write(data_dir / name)
  manifest = _prepare(data_dir, tmp_path / 'out', val_fraction=0.5)
  assert manifest['split']['method'] == 'dlib_xml'
  val = {f['source'].decode() for f in _read(tmp_path / 'out', 'val')}
  assert val == {im.get('file') for im in images[6:]}
  assert manifest['counts']['faces_written'] == len(truth)


# Bad input.


def _break(data_dir, truth):
  """Breaks the generated set in every way; returns {file: reason pattern}."""
  rels = sorted({rel for rel, _ in truth})
  pts = [rel.replace('.jpg', '_1.pts') for rel in rels]  # each image's face 0

  def write_pts(i, landmarks):
    (data_dir / pts[i]).write_text(synthetic.pts_text(landmarks))

  os.remove(data_dir / rels[0])
  (data_dir / rels[1]).write_bytes(b'garbage')
  jpeg = (data_dir / rels[2]).read_bytes()
  (data_dir / rels[2]).write_bytes(jpeg[:len(jpeg) // 2])
  write_pts(3, truth[rels[3], 0] + [500, 0])
  write_pts(4, np.where(np.arange(68)[:, None] == 30, np.nan,
                        truth[rels[4], 0]))
  write_pts(5, truth[rels[5], 0][36:48])  # eyes only
  pattern = str(data_dir / rels[0]).replace('.jpg', '_*.pts')
  no_image = {os.path.relpath(p, data_dir): 'no image beside it'
              for p in glob.glob(pattern)}
  return no_image | {
      rels[1]: 'cannot decode', rels[2]: 'cannot decode|truncated JPEG',
      rels[3]: 'outside the 96x80 image', pts[4]: 'NaN',
      pts[5]: '12 points, expected 68'}


def test_bad_faces_are_skipped_listed_and_printed(faces_dir, tmp_path, capsys):
  data_dir, truth = faces_dir
  expected = _break(data_dir, truth)
  manifest = _prepare(data_dir, tmp_path / 'out', layout='pts')
  skipped = manifest['skipped']
  assert {s['file'] for s in skipped} == set(expected)
  for s in skipped:
    assert re.search(expected[s['file']], s['reason']), s
  written = _read(tmp_path / 'out', 'train') + _read(tmp_path / 'out', 'val')
  assert len(written) == manifest['counts']['faces_written']
  assert len(written) == len(truth) - len(skipped)
  assert manifest['counts']['faces_skipped'] == len(skipped)
  printed = capsys.readouterr().out
  assert f'skipped: {len(skipped)} faces' in printed
  assert all(f'{s["file"]} (face {s["face_index"]}): ' in printed
             for s in skipped)


def test_all_faces_bad_is_an_error(tmp_path):
  eyes = synthetic.pts_text(np.random.default_rng(0).uniform(0, 50, (12, 2)))
  for name in ('a', 'b'):
    (tmp_path / f'{name}.pts').write_text(eyes)
    cv2.imwrite(str(tmp_path / f'{name}.jpg'), np.zeros((50, 50, 3), np.uint8))
  with pytest.raises(sources.DataError,
                     match='no usable faces.*all 2 skipped.*12 points'):
    _prepare(tmp_path, tmp_path / 'out')
  assert not os.path.exists(tmp_path / 'out')


def test_strict_stops_at_the_first_bad_face_and_writes_nothing(
    faces_dir, tmp_path):
  data_dir, truth = faces_dir
  _break(data_dir, truth)
  first = sorted(truth)[0][0].replace('.jpg', '_1.pts')
  with pytest.raises(sources.DataError,
                     match=f'^{first} \\(face 0\\): no image beside it'):
    _prepare(data_dir, tmp_path / 'out', layout='pts', strict=True)
  assert not os.path.exists(tmp_path / 'out')


def test_strict_bad_image_keeps_the_old_output(faces_dir, tmp_path):
  data_dir, truth = faces_dir
  _prepare(data_dir, tmp_path / 'out', layout='pts')
  before = _files(tmp_path / 'out')
  rel = sorted(truth)[3][0]
  (data_dir / rel).write_bytes(b'garbage')
  with pytest.raises(sources.DataError, match=f'{rel} .*cannot decode'):
    _prepare(data_dir, tmp_path / 'out', layout='pts', strict=True,
             overwrite=True, num_shards=3)
  assert _files(tmp_path / 'out') == before


def test_existing_output_needs_overwrite(faces_dir, tmp_path):
  data_dir, _ = faces_dir
  _prepare(data_dir, tmp_path / 'out', layout='pts', num_shards=3)
  with pytest.raises(FileExistsError, match='out already holds.*--overwrite'):
    _prepare(data_dir, tmp_path / 'out', layout='pts')
  manifest = _prepare(data_dir, tmp_path / 'out', layout='pts', num_shards=2,
                      overwrite=True)
  shards = manifest['splits']['train']['shards'] + manifest['splits']['val'][
      'shards']
  assert sorted(os.listdir(tmp_path / 'out')) == sorted(
      shards + ['manifest.json'])  # the 3-shard files are gone


def test_killed_run_leaves_no_manifest_and_no_shard(faces_dir, tmp_path,
                                                    monkeypatch):
  data_dir, _ = faces_dir
  serialize = records.serialize_face
  calls = []

  def dying_serialize(*args):
    calls.append(1)
    if len(calls) > 3:
      raise KeyboardInterrupt  # as if killed mid-run
    return serialize(*args)

  monkeypatch.setattr(prepare.records, 'serialize_face', dying_serialize)
  (tmp_path / 'out').mkdir()
  with pytest.raises(KeyboardInterrupt):
    _prepare(data_dir, tmp_path / 'out', layout='pts')
  assert os.listdir(tmp_path / 'out') == []


@pytest.mark.parametrize('make', [lambda p: None, lambda p: p.mkdir()])
def test_missing_or_empty_data_dir(tmp_path, make):
  make(tmp_path / 'data')
  with pytest.raises(sources.DataError, match='data'):
    _prepare(tmp_path / 'data', tmp_path / 'out')
  assert not os.path.exists(tmp_path / 'out')


def _run_cli(*args):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return subprocess.run([sys.executable, '-m', 'pipeline.prepare', *args],
                        capture_output=True, text=True, check=False, cwd=root)


def test_same_bytes_across_processes(faces_dir, tmp_path):
  data_dir, _ = faces_dir
  manifest = _prepare(data_dir, tmp_path / 'a', layout='pts')
  result = _run_cli(f'--data_dir={data_dir}', f'--output_dir={tmp_path / "b"}',
                    '--layout=pts', '--num_shards=2', '--image_size=48')
  if result.returncode:
    raise RuntimeError(result.stderr)  # not the expected failure
  with open(tmp_path / 'b' / 'manifest.json') as f:
    if json.load(f) != manifest:
      raise RuntimeError('manifests differ')
  assert _files(tmp_path / 'a') == _files(tmp_path / 'b')


def test_command_line_reports_errors_without_traceback(faces_dir, tmp_path):
  data_dir, _ = faces_dir
  (tmp_path / 'out').mkdir()
  (tmp_path / 'out' / 'manifest.json').write_text('{}')
  result = _run_cli(f'--data_dir={data_dir}',
                    f'--output_dir={tmp_path / "out"}')
  assert result.returncode == 1
  assert 'prepare: --output_dir' in result.stderr
  assert 'Traceback' not in result.stderr


def test_absurd_landmark_or_box_is_skipped_not_a_huge_crop(faces_dir, tmp_path):
  data_dir, truth = faces_dir
  rels = sorted({rel for rel, _ in truth})
  landmarks = truth[rels[0], 0].copy()
  landmarks[8] = [50, 1e6]  # a chin a million pixels down
  (data_dir / rels[0].replace('.jpg', '_1.pts')).write_text(
      synthetic.pts_text(landmarks))
  manifest = _prepare(data_dir, tmp_path / 'pts', layout='pts')
  [skipped] = manifest['skipped']
  assert skipped['file'] == rels[0]
  assert 'landmarks up to 999920 px outside the 96x80 image' in (
      skipped['reason'])
  xml = (data_dir / 'labels.xml').read_text(encoding='ISO-8859-1')
  at = xml.index(f'"{rels[0]}"')
  xml = xml[:at] + re.sub(r'(<box [^>]*)width="\d+"', r'\1width="1000000"',
                          xml[at:], count=1)
  (data_dir / 'labels.xml').write_text(xml, encoding='ISO-8859-1')
  manifest = _prepare(data_dir, tmp_path / 'xml', layout='xml')
  [skipped] = manifest['skipped']
  assert 'face box up to' in skipped['reason']


def test_output_under_a_file_is_one_clear_error(faces_dir, tmp_path):
  data_dir, _ = faces_dir
  (tmp_path / 'file').write_text('')
  with pytest.raises(FileExistsError,
                     match='--output_dir .*file/out: .*file exists and is '
                           'not a folder'):
    _prepare(data_dir, tmp_path / 'file' / 'out')


@pytest.mark.skipif(os.geteuid() == 0, reason='root can write anywhere')
def test_read_only_output_is_one_clear_error(faces_dir, tmp_path):
  data_dir, _ = faces_dir
  (tmp_path / 'ro').mkdir()
  os.chmod(tmp_path / 'ro', 0o500)
  with pytest.raises(sources.DataError,
                     match='--output_dir .*ro/out: cannot write in .*ro'):
    _prepare(data_dir, tmp_path / 'ro' / 'out')


def test_temporary_files_of_killed_runs_are_removed(faces_dir, tmp_path):
  data_dir, _ = faces_dir
  out = tmp_path / 'out'
  out.mkdir()
  stale = ['.train-00000-of-00002.tfrecord.tmp-4000000',
           '.val-00000-of-00001.tfrecord.tmp-12', '.manifest.json.tmp-77']
  for name in stale + ['.notes.tmp-1', 'notes.txt']:
    (out / name).write_text('')
  manifest = _prepare(data_dir, out, layout='pts')
  shards = manifest['splits']['train']['shards'] + manifest['splits']['val'][
      'shards']
  assert sorted(os.listdir(out)) == sorted(
      shards + ['manifest.json', '.notes.tmp-1', 'notes.txt'])


def _manifest_with_subsets(subsets):
  split = {'faces': sum(subsets.values()), 'images': sum(subsets.values()),
           'subsets': subsets, 'shards': ['train-00000-of-00001.tfrecord']}
  return {'counts': {'faces_written': split['faces'], 'boxes_ignored': 0},
          'split': {'method': 'hash', 'val_fraction': 0.1},
          'splits': {'train': split, 'val': split | {'subsets': {}}},
          'skipped': []}


def test_summary_lists_only_the_largest_subsets():
  subsets = {f'person{i:03d}': i % 7 + 1 for i in range(347)}
  text = prepare.summary(_manifest_with_subsets(subsets), 1.0)
  [line] = [x for x in text.splitlines() if x.startswith('  train:')]
  assert len(line) < 200
  assert ('347 subsets, largest person006 7, person013 7, person020 7, '
          'person027 7, person034 7, ... 342 more in manifest.json') in line


@pytest.mark.parametrize('split, says', [
    ({'method': 'hash', 'val_fraction': 0.1},
     'by a hash of each image path, about 10% of images to val '
     '(--val_fraction=0.1)'),
    ({'method': 'hash', 'val_fraction': 0.2,
      'annotations': sources.DLIB_TEST_XML},
     f'--all_to=val to put all of {sources.DLIB_TEST_XML} in val'),
    ({'method': 'dlib_xml', 'train': sources.DLIB_TRAIN_XML,
      'val': sources.DLIB_TEST_XML},
     f'{sources.DLIB_TRAIN_XML} is train, {sources.DLIB_TEST_XML} is val'),
    ({'method': 'all_to', 'all_to': 'val'}, 'every face in val (--all_to=val)'),
])
def test_summary_says_how_the_split_was_made(split, says):
  manifest = _manifest_with_subsets({'ibug': 3}) | {'split': split}
  lines = prepare.summary(manifest, 1.0).splitlines()
  assert lines[1].startswith('  split: ') and says in lines[1]


def test_dlib_test_xml_alone_can_go_all_to_val(faces_dir, tmp_path):
  data_dir, truth = faces_dir
  os.rename(data_dir / 'labels.xml', data_dir / sources.DLIB_TEST_XML)
  manifest = _prepare(data_dir, tmp_path / 'out', all_to='val')
  assert manifest['split'] == {'method': 'all_to', 'all_to': 'val',
                               'annotations': sources.DLIB_TEST_XML}
  assert manifest['splits']['train']['shards'] == []
  # As many val shards as train shards would have been, not one per face.
  assert len(manifest['splits']['val']['shards']) == 2
  assert len(_read(tmp_path / 'out', 'val')) == len(truth)
