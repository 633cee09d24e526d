"""The live package and webcam.py, headless on a generated video and photo."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from live import detectors
from live import media
from live import smoothing
from live import webcam_lib
from live.errors import WebcamError
from model import landmarker as landmarker_lib
from pipeline import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMES, WIDTH, HEIGHT = 10, 160, 120


@pytest.fixture(scope='module')
def setup(tmp_path_factory, tiny_export):
  root = str(tmp_path_factory.mktemp('webcam'))
  video = os.path.join(root, 'faces.avi')
  writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*'MJPG'), 10,
                           (WIDTH, HEIGHT))
  for i in range(FRAMES):
    frame, _ = synthetic.render_image(np.random.default_rng(i), WIDTH, HEIGHT,
                                      1)
    writer.write(frame)
  writer.release()
  photo = os.path.join(root, 'face.png')  # Lossless: pixels can be compared.
  cv2.imwrite(photo, frame)
  return dict(export_dir=tiny_export['export_dir'], video=video, photo=photo)


def _run(setup, source, log=lambda *_: None, **options):
  """webcam_lib.run headless on full frames with the tiny model."""
  config = webcam_lib.WebcamConfig(
      source=source, **{'model': setup['export_dir'], 'headless': True,
                        'detector': 'full_frame', **options})
  return webcam_lib.run(config, log=log)


def _read_json(path):
  with open(path) as f:
    return json.load(f)


def _no_faces(frame):
  del frame
  return np.zeros((0, 4))


def _command_line(*args):
  """webcam.py's exit code and its last stderr line."""
  result = subprocess.run([sys.executable, os.path.join(REPO, 'webcam.py'),
                           '--headless', *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
  return result.returncode, result.stderr.strip().splitlines()[-1]


def test_video_headless(setup, tmp_path):
  output, landmarks = str(tmp_path / 'out.avi'), str(tmp_path / 'lm.json')
  summary = _run(setup, setup['video'], output=output, json=landmarks,
                 smoothing=True)
  assert summary['frames'] == summary['frames_with_faces'] == FRAMES
  document = _read_json(landmarks)
  assert document['source'] == setup['video']
  assert document['detector'] == 'full_frame' and document['smoothing']
  frames = document['frames']
  assert [f['frame'] for f in frames] == list(range(FRAMES))
  assert frames[3]['time'] == pytest.approx(0.3)
  for frame in frames:
    (face,) = frame['faces']
    assert face['box'] == [0, 0, WIDTH, HEIGHT]
    assert np.array(face['landmarks']).shape == (68, 2)
  capture = cv2.VideoCapture(output)
  assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == FRAMES
  capture.release()


def test_photo_headless_with_tflite(setup, tmp_path):
  output, landmarks = str(tmp_path / 'out.jpg'), str(tmp_path / 'lm.json')
  model = os.path.join(setup['export_dir'], landmarker_lib.tflite_name('float32'))
  _run(setup, setup['photo'], model=model, output=output, json=landmarks,
       num_threads=1)
  (frame,) = _read_json(landmarks)['frames']
  assert np.array(frame['faces'][0]['landmarks']).shape == (68, 2)
  assert cv2.imread(output).shape == (HEIGHT, WIDTH, 3)


def test_frames_without_faces(setup, tmp_path, monkeypatch):
  landmarks = str(tmp_path / 'lm.json')
  monkeypatch.setattr(detectors, 'make_detector', lambda name: _no_faces)
  summary = _run(setup, setup['video'], json=landmarks, smoothing=True)
  assert summary['frames_with_faces'] == 0
  assert [f['faces'] for f in _read_json(landmarks)['frames']] == [[]] * FRAMES


def test_haar_detector_or_a_clear_reason():
  try:
    detect = detectors.haar_detector()
  except WebcamError as e:
    assert 'opencv-python-headless<5' in str(e)
    return
  assert detect(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).shape == (0, 4)


def test_one_euro_filter():
  smoother = smoothing.OneEuroFilter(min_cutoff=1.0, beta=0.0)
  rng = np.random.default_rng(0)
  still = np.full((1, 68, 2), 50.0)
  noisy = [still + rng.normal(0, 1, still.shape) for _ in range(60)]
  smoothed = [smoother(p, t / 30) for t, p in enumerate(noisy)]
  assert np.std(np.array(smoothed[10:]) - still) < 0.5 * np.std(
      np.array(noisy[10:]) - still)
  # A second face appears: the filter restarts from the new points.
  two = np.full((2, 68, 2), 80.0)
  np.testing.assert_array_equal(smoother(two, 3.0), two)
  # Fast motion is followed closely when beta is large.
  fast = smoothing.OneEuroFilter(min_cutoff=1.0, beta=1.0)
  for t in range(10):
    out = fast(np.full((1, 68, 2), 100.0 * t), t / 30)
  assert abs(out[0, 0, 0] - 900) < 30


def test_missing_model_and_source(setup, tmp_path):
  with pytest.raises(FileNotFoundError, match='export.py'):
    _run(setup, setup['photo'], model=str(tmp_path / 'none'))
  assert webcam_lib.DEFAULT_MODEL == os.path.join(REPO, 'pretrained')
  with pytest.raises(WebcamError, match='missing.mp4'):
    _run(setup, str(tmp_path / 'missing.mp4'))
  with pytest.raises(WebcamError, match='--output'):
    _run(setup, setup['video'], output=str(tmp_path / 'x.jpg'))


def test_window_without_gui_says_headless(setup):
  if 'NONE' not in [line for line in cv2.getBuildInformation().splitlines()
                    if 'GUI:' in line][0]:
    pytest.skip('this OpenCV has a GUI')
  with pytest.raises(WebcamError, match='--headless'):
    _run(setup, setup['photo'], headless=False)


@pytest.mark.parametrize('source, says', [
    ('nope.avi', 'does not exist'),
    ('', 'is a folder: folder input is not supported yet')])
def test_command_line_says_what_is_wrong_in_one_line(tmp_path, source, says):
  code, last_line = _command_line(f'--model={tmp_path}',
                                  f'--source={tmp_path / source}')
  assert code != 0
  assert last_line.startswith(f'webcam: --source={tmp_path / source}')
  assert says in last_line and 'or a camera index' in last_line


def test_sources_name_what_is_accepted(tmp_path):
  notes = tmp_path / 'notes.txt'
  notes.write_text('not a video')
  for source, says in [(tmp_path, 'is a folder'),
                       (tmp_path / 'gone.mp4', 'does not exist'),
                       (notes, 'is neither an image, a video file nor')]:
    with pytest.raises(WebcamError, match=says) as error:
      media.Source(str(source))
    assert f'--source={source}' in str(error.value)
    assert '.png' in str(error.value) and '.mp4' in str(error.value)


def _fail_on_frames(name):
  """A detector factory whose detector fails the test if any frame is seen."""
  del name

  def detect(frame):
    raise AssertionError('a frame was processed before outputs were checked')

  return detect


@pytest.mark.parametrize('outputs, says', [
    ({'json': 'missing/lm.json'}, '--json=.* does not exist'),
    ({'output': 'missing/out.avi', 'json': 'lm.json'},
     '--output=.* does not exist'),
    ({'output': 'folder.avi'}, 'is a folder'),
    ({'output': 'out.avi', 'json': 'folder.avi'}, 'is a folder'),
    ({'output': 'out.txt'}, '--output=.*use an image'),
])
def test_outputs_are_checked_before_the_first_frame(setup, tmp_path,
                                                    monkeypatch, outputs,
                                                    says):
  (tmp_path / 'folder.avi').mkdir()
  monkeypatch.setattr(detectors, 'make_detector', _fail_on_frames)
  with pytest.raises(WebcamError, match=says):
    _run(setup, setup['video'],
         **{k: str(tmp_path / v) for k, v in outputs.items()})
  assert sorted(os.listdir(tmp_path)) == ['folder.avi']


def test_a_codec_opencv_lacks_fails_before_the_first_frame(setup, tmp_path,
                                                           monkeypatch):
  class NoCodec:
    def __init__(self, *args):
      del args

    def isOpened(self):  # pylint: disable=invalid-name
      return False

  monkeypatch.setattr(cv2, 'VideoWriter', NoCodec)
  monkeypatch.setattr(detectors, 'make_detector', _fail_on_frames)
  with pytest.raises(WebcamError, match='--output=.*cannot write'):
    _run(setup, setup['video'], output=str(tmp_path / 'out.avi'),
         json=str(tmp_path / 'lm.json'))


@pytest.mark.parametrize('json_fails', [False, True])
def test_one_failed_output_loses_not_the_other(setup, tmp_path, monkeypatch,
                                               json_fails):
  output, landmarks = str(tmp_path / 'out.png'), str(tmp_path / 'lm.json')
  monkeypatch.setattr(cv2, 'imwrite', lambda *_: False)
  if json_fails:
    def disk_full(*_):
      raise OSError('No space left on device')
    monkeypatch.setattr(media, 'write_json', disk_full)
  logged = []
  with pytest.raises(WebcamError, match='--output=.*not written') as error:
    _run(setup, setup['photo'], output=output, json=landmarks,
         log=logged.append)
  if json_fails:
    assert f'--json={landmarks} not written: No space' in str(error.value)
    assert os.listdir(tmp_path) == []
  else:
    assert f'{landmarks} was written' in str(error.value)
    assert f'wrote {landmarks}' in logged[-1]
    (frame,) = _read_json(landmarks)['frames']
    assert len(frame['faces']) == 1
    assert os.listdir(tmp_path) == ['lm.json']


def test_json_is_written_whole_or_not_at_all(tmp_path):
  path = tmp_path / 'lm.json'
  media.write_json(str(path), {'frames': [1]})
  with pytest.raises(TypeError):
    media.write_json(str(path), {'frames': [object()]})
  assert _read_json(path) == {'frames': [1]}
  assert os.listdir(tmp_path) == ['lm.json']


def test_frame_rate_only_for_video_and_camera(setup, tmp_path, monkeypatch):
  monkeypatch.setattr(detectors, 'make_detector', lambda name: _no_faces)
  output, logged = str(tmp_path / 'out.png'), []
  summary = _run(setup, setup['photo'], output=output, log=logged.append)
  # Nothing found, nothing drawn: a photo's one frame would time the model's
  # start-up, so no frame rate is drawn on it either.
  np.testing.assert_array_equal(cv2.imread(output), cv2.imread(setup['photo']))
  assert summary['fps'] is None and 'FPS' not in logged[-1]
  logged.clear()
  summary = _run(setup, setup['video'], max_frames=2, log=logged.append)
  assert summary['fps'] > 0 and f'{summary["fps"]} FPS' in logged[-1]


def test_names_the_model_file_it_loaded(setup, monkeypatch):
  load = landmarker_lib.Landmarker.load

  def load_naming_its_file(path, num_threads=None):
    landmarker = load(path, num_threads)
    landmarker.source = os.path.join(path, 'chosen.tflite')
    return landmarker

  monkeypatch.setattr(landmarker_lib.Landmarker, 'load', load_naming_its_file)
  logged = []
  _run(setup, setup['photo'], log=logged.append)
  assert f'Model: {os.path.join(setup["export_dir"], "chosen.tflite")}' in (
      logged)
