"""evaluation/ on shards and raw folders, from a workdir and from an export."""

import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

import faces
from evaluation import evaluate_lib
from evaluation import photos as photos_lib
from evaluation import samples as samples_lib
from facelandmark import detectors
from evaluation import report as report_lib
from model import landmarker as landmarker_lib
from pipeline import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quiet(*_):
  pass


def run(data_dir, output_dir, log=_quiet, **kwargs):
  return evaluate_lib.evaluate(evaluate_lib.EvalConfig(
      data_dir=data_dir, output_dir=output_dir, **kwargs), log=log)


def test_groups_follow_300w():
  masks = report_lib.groups(['afw', 'ibug', 'helen/testset', 'lfpw/testset',
                           'ibug'])
  assert list(masks) == ['all', 'afw', 'helen/testset', 'ibug',
                         'lfpw/testset', '300w_common', '300w_challenging',
                         '300w_full']
  assert masks['300w_common'].tolist() == [False, False, True, True, False]
  assert masks['300w_full'].sum() == 4
  assert list(report_lib.groups(['afw', 'helen/trainset'])) == [
      'all', 'afw', 'helen/trainset']


def test_workdir_on_shards(tiny_export, tmp_path):
  out = str(tmp_path / 'eval')
  report = run(tiny_export['shards'], out,
                             workdir=tiny_export['workdir'], overlays=3,
                             log=_quiet)
  with open(os.path.join(out, 'report.json')) as f:
    assert json.load(f) == json.loads(json.dumps(report))
  assert report['split'] == 'val' and report['box'] == 'landmarks'
  groups = report['groups']
  assert groups['all']['faces'] == len(report['faces'])
  assert set(groups) >= {'all'} | {f['subset'] for f in report['faces']}
  for summary in groups.values():
    assert set(summary) == {'faces', 'nme', 'nme_median', 'failure_rate_0.08',
                            'failure_rate_0.10', 'auc_0.08'}
    assert 0 <= summary['auc_0.08'] <= 1
  with open(os.path.join(out, 'ced.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert len(os.listdir(os.path.join(out, 'overlays'))) == 3


def test_export_on_raw_folder_both_layouts(tiny_export, tmp_path):
  with open(os.path.join(tiny_export['raw'], 'labels.xml')) as f:
    num_faces = f.read().count('<box ')
  said = []
  reports = {
      layout: run(tiny_export['raw'], str(tmp_path / layout),
                  model=tiny_export['export_dir'], layout=layout, split='all',
                  log=said.append)
      for layout in ('xml', 'pts')}
  # The tiny net trained on the folder's train photos: they are named.
  (warning,) = {line for line in said if line.startswith('Warning')}
  assert re.search(r'Warning: \d+ of these photos are in the train split '
                   r'.*trained on: .*\.(jpg|png)', warning)
  for report in reports.values():
    assert report['split'] == 'all'
    assert report['groups']['all']['faces'] == num_faces
    assert {'300w_common', '300w_challenging', '300w_full'} <= set(
        report['groups'])
    full = report['groups']['300w_full']['faces']
    assert full == sum(report['groups'][s]['faces']
                       for s in faces.TEST_SUBSETS[1:])
  # Both layouts hold the same points (XML rounds them to 1e-6 pixels).
  np.testing.assert_allclose(
      [f['nme'] for f in reports['xml']['faces']],
      [f['nme'] for f in reports['pts']['faces']], atol=1e-4)


def test_workdir_and_export_agree(tiny_export, tmp_path):
  from_workdir = run(tiny_export['shards'], str(tmp_path / 'a'),
                                   workdir=tiny_export['workdir'], log=_quiet)
  from_export = run(tiny_export['shards'], str(tmp_path / 'b'),
                                  model=tiny_export['export_dir'], log=_quiet)
  np.testing.assert_allclose([f['nme'] for f in from_workdir['faces']],
                             [f['nme'] for f in from_export['faces']],
                             atol=1e-5)


def test_options_change_the_numbers(tiny_export, tmp_path):
  def nme(**kwargs):
    report = run(tiny_export['raw'], str(tmp_path), split='all',
                 layout='xml', model=tiny_export['export_dir'], log=_quiet,
                 **kwargs)
    return report['groups']['all']['nme']

  base = nme()
  assert nme(normalization='pupil') != base
  # dlib boxes are whole pixels around the points: a slightly larger view.
  assert nme(box='annotation') != base
  assert nme(refine=True) != base


def test_bad_arguments(tiny_export, tmp_path):
  with pytest.raises(ValueError, match='not both'):
    run(tiny_export['shards'], str(tmp_path), log=_quiet,
                      workdir=tiny_export['workdir'],
                      model=tiny_export['export_dir'])
  with pytest.raises(ValueError, match='--normalization'):
    run(tiny_export['shards'], str(tmp_path), log=_quiet,
                      model=tiny_export['export_dir'], normalization='iod')
  with pytest.raises(ValueError, match='--split'):
    run(tiny_export['raw'], str(tmp_path), log=_quiet,
                      model=tiny_export['export_dir'], split='test')
  # A raw folder has a train split: no default that silently includes it.
  for detector in (None, 'blazeface'):
    with pytest.raises(ValueError, match=r'--split is required for a raw '
                       r'folder .*--split=val scores the photos'):
      run(tiny_export['raw'], None, model=tiny_export['export_dir'],
          detector=detector)


def test_latest_checkpoint_of_a_workdir(tiny_export):
  report = run(tiny_export['shards'], None, workdir=tiny_export['workdir'],
               checkpoint='latest')
  assert report['model'].endswith(os.path.join('checkpoints', 'ckpt-4'))


def test_output_dir_that_is_a_file_fails_before_the_work(tiny_export,
                                                         tmp_path):
  target = tmp_path / 'report'
  target.write_text('not a folder')
  with pytest.raises(ValueError, match='--output_dir .* is a file'):
    run(tiny_export['shards'], str(target), model=str(tmp_path / 'absent'))


def test_without_output_dir_the_table_is_printed(tiny_export, tmp_path):
  lines = []
  report = run(tiny_export['shards'], None, model=tiny_export['export_dir'],
               log=lines.append)
  assert report['groups']['all']['faces'] > 0
  assert lines and lines[0].startswith('group')


def test_script_errors_are_one_line(tiny_export, tmp_path):
  empty = tmp_path / 'workdir'
  empty.mkdir()
  (empty / 'config.json').write_text('')
  proc = subprocess.run(
      [sys.executable, 'evaluate.py', f'--workdir={empty}',
       f'--data_dir={tiny_export["shards"]}'], cwd=REPO, capture_output=True,
      text=True)
  assert proc.returncode != 0 and 'Traceback' not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith(
      f'evaluate: {empty / "config.json"} is not valid JSON')


def test_default_model_is_the_shipped_one(tiny_export):
  report = run(tiny_export['shards'], None)
  assert report['model'].startswith(landmarker_lib.SHIPPED_MODEL)


@pytest.fixture(scope='module')
def photo_folder(tmp_path_factory):
  """The bundled photo on a taller canvas, in the .pts layout, annotated with
  two faces: the real one (the shipped model's own points from a box around
  the face, so the path is judged against what the net itself can do) and one
  on the black strip below, which no detector can find."""
  photo = cv2.imread(os.path.join(REPO, 'assets', 'eileen_collins_nasa.jpg'))
  height, width = photo.shape[:2]
  canvas = np.zeros((height + 128, width, 3), np.uint8)
  canvas[:height] = photo
  marker = landmarker_lib.Landmarker.load(landmarker_lib.SHIPPED_MODEL)
  points = marker.predict(cv2.cvtColor(photo, cv2.COLOR_BGR2RGB),
                          [[180, 60, 300, 190]], refine=True)[0]
  hidden = points + [0, height + 4 - points[:, 1].min()]
  assert hidden[:, 1].max() < height + 128
  root = tmp_path_factory.mktemp('photos') / 'nasa'
  root.mkdir()
  cv2.imwrite(str(root / 'crew.jpg'), canvas, [cv2.IMWRITE_JPEG_QUALITY, 98])
  for index, face in enumerate((points, hidden), 1):
    (root / f'crew_{index}.pts').write_text(synthetic.pts_text(face))
  return str(root)


def test_photo_mode_finds_scores_and_counts_misses(photo_folder):
  said = []
  report = run(photo_folder, None, detector='blazeface', layout='pts',
               split='all', log=said.append)
  summary = report['groups']['all']
  assert (summary['faces'], summary['found']) == (2, 1)
  assert summary['nme'] < 0.05  # found from the detector's box
  assert summary['failure_rate_0.08'] == 0.5  # the miss is a failure
  assert not report['refine'] and report['detector'] == 'blazeface'
  assert [f['nme'] is None for f in report['faces']] == [False, True]
  assert report['photos'] == [{'source': 'crew.jpg', 'faces': 2, 'found': 1,
                               'detections': 1, 'unmatched': 0}]
  assert report['unmatched_detections'] == 0
  assert 'Unmatched detections: 0 of 1 on 1 photos' in '\n'.join(said)


class _Placed:
  """A landmarker that puts the given points wherever it is asked to look:
  its answer for a box is the points whose landmark box best overlaps it."""

  def __init__(self, *points):
    self.points = points

  def predict(self, image, boxes, refine=False, flip=False):
    del image, refine, flip
    return np.array([max(self.points, key=lambda p: _iou(
        photos_lib.landmark_boxes(p[None])[0], box)) for box in boxes])


def _iou(a, b):
  inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2],
                                                                b[:2]), 0,
                          None))
  return inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter)


def test_photo_mode_matches_predicted_landmarks_and_reports_the_unmatched():
  """Known answers: the face is found through its predicted points even
  though the detector's box is twice the face (IoU 0.25 with it); a second
  detection, on a face nobody annotated, is unmatched."""
  face = synthetic_points(40, 40, 100)
  unannotated = synthetic_points(300, 60, 80)
  wide = np.array([0.0, 0.0, 200.0, 200.0])  # Twice the face's side.
  assert _iou(wide, photos_lib.landmark_boxes(face[None])[0]) < 0.3
  sample = samples_lib.Sample(np.zeros((240, 400, 3), np.uint8),
                              face[None], face[None], 'afw', 'a.jpg')
  detections = detectors.Detections(
      np.array([wide, photos_lib.landmark_boxes(unannotated[None])[0]]),
      np.array([0.9, 0.8]))
  results = photos_lib.photo_results(_Placed(face, unannotated),
                                     lambda _: detections, [sample])
  assert results.found.tolist() == [True]
  assert results.nme.tolist() == [0.0]
  assert results.photos == [{'source': 'a.jpg', 'faces': 1, 'found': 1,
                             'detections': 2, 'unmatched': 1}]
  assert photos_lib.unmatched_line(results.photos) == (
      'Unmatched detections: 1 of 2 on 1 photos match no annotated face '
      '(300-W leaves some faces unannotated: not necessarily false): '
      'a.jpg (1).')


def synthetic_points(x0, y0, side):
  """68 points spread over a square face box (any spread with this box)."""
  rng = np.random.default_rng(int(x0))
  points = rng.uniform(0.1, 0.9, (68, 2)) * side + [x0, y0]
  points[:2] = [[x0, y0], [x0 + side, y0 + side]]  # The box's corners.
  return points


def test_photo_mode_needs_whole_photos(tiny_export):
  with pytest.raises(ValueError, match='whole photos'):
    run(tiny_export['shards'], None, detector='blazeface')
