"""The command's promises (issue 18): a stop signal keeps what was done,
outputs never destroy the source or each other, a video lands whole, the
JSON streams; every flag is checked before the first frame; drawings are
sized by each face and saved frames carry no frame rate. The shipped model
on the bundled photo, full-frame boxes (no training, no dataset)."""

import json
import os
import shutil
import subprocess
import sys
import tracemalloc

import cv2
import numpy as np
import pytest

from facelandmark import command
from facelandmark import detectors
from facelandmark import finder as finder_lib
from facelandmark import landmarker as landmarker_lib
from facelandmark import media
from facelandmark import overlay
from facelandmark.errors import WebcamError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTO = os.path.join(REPO, 'assets', 'eileen_collins_nasa.jpg')
FRAMES, SIZE = 20, (160, 160)


@pytest.fixture(scope='module')
def clip(tmp_path_factory):
  """A FRAMES-frame MJPG video of the bundled photo's face, 30 frames/s."""
  path = str(tmp_path_factory.mktemp('clip') / 'face.avi')
  face = cv2.resize(cv2.imread(PHOTO)[40:240, 124:324], SIZE)
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'MJPG'), 30, SIZE)
  for k in range(FRAMES):
    writer.write(np.roll(face, k % 3, axis=1))
  writer.release()
  return path


def _run(source, log=lambda *_: None, **options):
  return command.run(command.WebcamConfig(
      source=str(source), **{'headless': True, 'detector': 'full_frame',
                             'num_threads': 1, **options}), log=log)


def _read_json(path):
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _frame_count(video):
  capture = cv2.VideoCapture(str(video))
  count = 0
  while capture.read()[0]:
    count += 1
  capture.release()
  return count


def _failing_at(frame_number, error=RuntimeError):
  """A make_detector whose detector raises `error` on that frame."""
  seen = []

  def make(name, num_threads=None):
    del name, num_threads

    def detect(frame):
      seen.append(1)
      if len(seen) == frame_number:
        raise error('detector failed')
      return detectors.full_frame_detector(frame)

    return detect

  return make


# Nothing lost.

# A child process that runs the command on argv[1] (video), writing argv[2]
# (video) and argv[3] (JSON), and sends itself argv[4] while the detector
# looks at the sixth frame.
SIGNALLED_RUN = '''
import os, signal, sys
from facelandmark import command, detectors
seen = []
def make(name, num_threads=None):
  def detect(frame):
    seen.append(1)
    if len(seen) == 6:
      os.kill(os.getpid(), getattr(signal, sys.argv[4]))
    return detectors.full_frame_detector(frame)
  return detect
detectors.make_detector = make
summary = command.run(command.WebcamConfig(
    source=sys.argv[1], output=sys.argv[2], json=sys.argv[3], headless=True,
    track=False, num_threads=1))
print(summary['frames'], summary['stopped'])
'''


@pytest.mark.parametrize('name', ['SIGTERM', 'SIGHUP'])
def test_a_stop_signal_keeps_the_frames_done(clip, tmp_path, name):
  output, landmarks = tmp_path / 'out.avi', tmp_path / 'faces.json'
  result = subprocess.run(
      [sys.executable, '-c', SIGNALLED_RUN, clip, str(output),
       str(landmarks), name], capture_output=True, text=True, timeout=120,
      check=False, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip().splitlines()[-1] == (
      f'5 interrupted by {name}')
  frames = _read_json(landmarks)['frames']
  assert [f['frame'] for f in frames] == list(range(5))
  assert _frame_count(output) == 5
  assert sorted(os.listdir(tmp_path)) == ['faces.json', 'out.avi']


@pytest.mark.parametrize('outputs, says', [
    ({'output': 'SOURCE'}, '--source=.* and --output=.* name the same file'),
    ({'json': 'SOURCE'}, '--source=.* and --json=.* name the same file'),
    ({'output': 'out.avi', 'json': 'out.avi'},
     '--output=.* and --json=.* name the same file'),
    ({'output': 'out.avi', 'json': '.out.partial.avi'},
     r'--json=.*partial.avi and --output=.*out.avi \(its temporary file\) '
     'name the same file'),
    ({'output': 'lm.json.tmp', 'json': 'lm.json'},
     r'--output=.* and --json=.* \(its temporary file\) name the same'),
])
def test_outputs_naming_the_source_or_each_other_are_refused(
    clip, tmp_path, monkeypatch, outputs, says):
  source = tmp_path / 'clip.avi'
  shutil.copy(clip, source)
  before = source.read_bytes()
  monkeypatch.setattr(detectors, 'make_detector', _failing_at(1))
  paths = {k: str(source if v == 'SOURCE' else tmp_path / v)
           for k, v in outputs.items()}
  with pytest.raises(WebcamError, match=says):
    _run(source, **paths)
  assert source.read_bytes() == before
  assert os.listdir(tmp_path) == ['clip.avi']


def test_video_is_written_under_a_temporary_name_then_renamed(
    clip, tmp_path, monkeypatch):
  output = tmp_path / 'out.avi'
  output.write_bytes(b'an earlier video')
  monkeypatch.setattr(detectors, 'make_detector', _failing_at(4))
  with pytest.raises(RuntimeError, match='detector failed'):
    _run(clip, output=str(output), track=False)
  # A run that failed leaves the earlier file as it was, and no part-file.
  assert output.read_bytes() == b'an earlier video'
  assert os.listdir(tmp_path) == ['out.avi']
  monkeypatch.undo()
  _run(clip, output=str(output))
  assert _frame_count(output) == FRAMES
  assert os.listdir(tmp_path) == ['out.avi']


def test_the_json_is_streamed_not_held(tmp_path):
  record = {'frame': 0, 'faces': [{'landmarks': np.random.default_rng(
      0).uniform(0, 640, (68, 2)).round(3).tolist()}]}
  path = tmp_path / 'long.json'
  tracemalloc.start()
  with media.JsonOutput(str(path), {'format': 'x'}, 'frames') as output:
    for k in range(3000):
      output.write(dict(record, frame=k))
    _, peak = tracemalloc.get_traced_memory()
    output.save({'skipped': []})
  tracemalloc.stop()
  # 3000 frames are ~5 MB of JSON; memory stays at one frame's worth.
  assert os.path.getsize(path) > 4e6 and peak < 5e5
  frames = _read_json(path)['frames']
  assert len(frames) == 3000 and frames[-1]['frame'] == 2999


# Flags checked at once, in one line.


@pytest.mark.parametrize('options, says', [
    ({'min_cutoff': 0.0}, '--min_cutoff must be a number above 0'),
    ({'min_cutoff': -1.0}, '--min_cutoff must be a number above 0'),
    ({'min_cutoff': float('nan')}, '--min_cutoff must be a number above 0'),
    ({'beta': -0.1}, '--beta must be a number at least 0'),
    ({'beta': float('inf')}, '--beta must be a number at least 0'),
    ({'max_frames': 0}, '--max_frames must be at least 1, got 0'),
    ({'max_frames': -5}, '--max_frames must be at least 1, got -5'),
    ({'num_threads': 0}, '--num_threads must be at least 1, got 0'),
    ({'detect_every': 0}, '--detect_every must be at least 1'),
    ({'source': '99999999999999999999'},
     '--source=99999999999999999999 is too large for a camera index'),
])
def test_flags_out_of_range_are_refused_before_anything_opens(
    clip, monkeypatch, options, says):
  def no_source(*args, **kwargs):
    raise AssertionError('the source was opened')

  monkeypatch.setattr(media, 'Source', no_source)
  with pytest.raises(WebcamError, match=says):
    _run(options.pop('source', clip), **options)


@pytest.mark.parametrize('flag, says', [
    ('--num_threads=0', 'webcam: --num_threads must be at least 1, got 0'),
    ('--source=99999999999999999999', 'webcam: --source=99999999999999999999 '
     'is too large for a camera index'),
    ('--min_cutoff=0', 'webcam: --min_cutoff must be a number above 0'),
])
def test_the_command_line_says_a_bad_flag_in_one_line(flag, says):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'webcam.py'), '--headless', flag],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines() == [
      result.stderr.strip().splitlines()[0]]
  assert result.stderr.strip().startswith(says)


def test_metadata_input_size_not_matching_the_file_fails_at_load(tmp_path):
  shipped = os.path.dirname(landmarker_lib.SHIPPED_MODEL)
  model = tmp_path / os.path.basename(landmarker_lib.SHIPPED_MODEL)
  shutil.copy(landmarker_lib.SHIPPED_MODEL, model)
  metadata = _read_json(os.path.join(shipped, landmarker_lib.METADATA))
  metadata['input_size'] = 128
  (tmp_path / landmarker_lib.METADATA).write_text(json.dumps(metadata))
  with pytest.raises(ValueError, match='input_size 128 does not match .*'
                     'takes 112x112 views'):
    finder_lib.FaceFinder.load(str(model), 'full_frame', num_threads=1)


def test_a_truncated_jpeg_in_a_folder_is_skipped_and_listed(tmp_path):
  folder = tmp_path / 'photos'
  folder.mkdir()
  shutil.copy(PHOTO, folder / 'a_whole.jpg')
  data = open(PHOTO, 'rb').read()  # pylint: disable=consider-using-with
  (folder / 'b_cut.jpg').write_bytes(data[:len(data) * 6 // 10])
  # OpenCV decodes it without complaint: the bottom is grey.
  assert cv2.imread(str(folder / 'b_cut.jpg')) is not None
  logged, landmarks = [], tmp_path / 'faces.json'
  summary = _run(folder, log=logged.append, json=str(landmarks))
  assert summary['frames'] == 1 and summary['skipped'] == 1
  assert _read_json(landmarks)['skipped'] == ['b_cut.jpg']
  assert any('b_cut.jpg: truncated JPEG' in line for line in logged)
  with pytest.raises(WebcamError, match='b_cut.jpg: truncated JPEG'):
    _run(folder / 'b_cut.jpg')


# Drawing.


def test_saved_frames_carry_no_frame_rate(clip, tmp_path, monkeypatch):
  monkeypatch.setattr(detectors, 'make_detector',
                      lambda *_, **__: lambda frame: detectors.Detections(
                          np.zeros((0, 4)), np.zeros(0)))
  output = tmp_path / 'out.avi'
  _run(clip, output=str(output))
  source, saved = cv2.VideoCapture(clip), cv2.VideoCapture(str(output))
  for _ in range(5):
    original, drawn = source.read()[1], saved.read()[1]
  # Where the rate would be drawn: only the re-encoding differs.
  corner = np.abs(original[:30, :100].astype(int) - drawn[:30, :100])
  assert corner.mean() < 4


def _face(box):
  """A Face whose 68 points spread over `box`."""
  box = np.asarray(box, np.float64)
  points = box[:2] + np.random.default_rng(0).uniform(0, 1, (68, 2)) * (
      box[2:] - box[:2])
  points[:2] = box[:2], box[2:]
  return finder_lib.Face(box, 1.0, points)


def test_dots_and_lines_are_sized_by_each_face():
  canvas = np.zeros((4000, 6000, 3), np.uint8)
  small, large = _face([100, 100, 140, 140]), _face([1000, 1000, 3000, 3000])
  drawn = overlay.annotate(canvas, [small, large])
  red = drawn[..., 2] > 100
  # The small face's dots leave most of it visible...
  assert red[100:140, 100:140].mean() < 0.35
  # ...and the large face's box is drawn thick enough to see on a screen.
  green_rows = (drawn[900:1100, 2000, 1] > 100).sum()
  assert green_rows >= 10


# Video time.


def test_frame_rate_is_checked_against_timestamps():
  assert media.frame_rate(25.0, [0, 40, 80]) == (25.0, None)
  assert media.frame_rate(25.0, [0]) == (25.0, None)  # no timestamps to say
  rate, why = media.frame_rate(1000.0, [0, 33.3, 66.7, 100.0])
  assert abs(rate - 30) < 0.1 and 'timestamps' in why
  assert media.frame_rate(90000.0, [0, 0.011, 0.022])[0] == media.FALLBACK_FPS
  assert media.frame_rate(0.0, [])[0] == media.FALLBACK_FPS


def test_a_video_declaring_1000_fps_is_timed_at_a_camera_rate(tmp_path):
  path = str(tmp_path / 'vfr.mp4')
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), 1000,
                           (64, 48))
  for k in range(12):
    writer.write(np.full((48, 64, 3), 20 * k, np.uint8))
  writer.release()
  warned = []
  with media.Source(path, warned.append) as source:
    frames = list(source)
  assert source.fps == media.FALLBACK_FPS
  assert warned == [f'--source={path}: it declares 1000 frames/s, which no '
                    f'camera records: timing frames at 30/s']
  # Every frame, in order (those read to check the rate included).
  assert [index for index, *_ in frames] == list(range(12))
  assert [frame[0, 0, 0] for *_, frame in frames] == pytest.approx(
      [20 * k for k in range(12)], abs=8)
  np.testing.assert_allclose([t for _, t, *_ in frames], np.arange(12) / 30)


# Detectors by source.


def test_photos_default_to_the_crowd_detector_and_say_what_it_misses(
    clip, tmp_path):
  logged, landmarks = [], tmp_path / 'faces.json'
  command.run(command.WebcamConfig(source=PHOTO, json=str(landmarks),
                                   headless=True, num_threads=1),
              log=logged.append)
  assert _read_json(landmarks)['settings']['detector'] == 'blazeface_both'
  assert ("Detector: blazeface_both; faces smaller than about 5% of a "
          "photo's shorter side, 26 px here, may be missed.") in logged
  logged.clear()
  command.run(command.WebcamConfig(source=clip, json=str(landmarks),
                                   headless=True, num_threads=1,
                                   max_frames=2), log=logged.append)
  assert _read_json(landmarks)['settings']['detector'] == 'blazeface'
  assert any(line.startswith("Detector: blazeface; faces smaller than about "
                             "10% of a frame's shorter side, 16 px here, may "
                             "be missed (--detector=blazeface_both")
             for line in logged)
