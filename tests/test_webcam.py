"""webcam.py headless on a generated video and photo; smoothing; errors."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import export
import webcam
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
  photo = os.path.join(root, 'face.jpg')
  cv2.imwrite(photo, frame)
  return dict(export_dir=tiny_export['export_dir'], video=video, photo=photo)


def _quiet(*_):
  pass


def _read_json(path):
  with open(path) as f:
    return json.load(f)


def test_video_headless(setup, tmp_path):
  output, landmarks = str(tmp_path / 'out.avi'), str(tmp_path / 'lm.json')
  summary = webcam.run(setup['video'], setup['export_dir'], output=output,
                       json_path=landmarks, headless=True,
                       detector='full_frame', smoothing=True, log=_quiet)
  assert summary['frames'] == summary['frames_with_faces'] == FRAMES
  frames = _read_json(landmarks)['frames']
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
  model = os.path.join(setup['export_dir'], export.tflite_name('float32'))
  webcam.run(setup['photo'], model, output=output, json_path=landmarks,
             headless=True, detector='full_frame', num_threads=1, log=_quiet)
  (frame,) = _read_json(landmarks)['frames']
  assert np.array(frame['faces'][0]['landmarks']).shape == (68, 2)
  assert cv2.imread(output).shape == (HEIGHT, WIDTH, 3)


def test_frames_without_faces(setup, tmp_path, monkeypatch):
  landmarks = str(tmp_path / 'lm.json')
  def no_faces(frame):
    return np.zeros((0, 4))

  monkeypatch.setattr(webcam, 'make_detector', lambda name: no_faces)
  summary = webcam.run(setup['video'], setup['export_dir'],
                       json_path=landmarks, headless=True, smoothing=True,
                       log=_quiet)
  assert summary['frames_with_faces'] == 0
  assert [f['faces'] for f in _read_json(landmarks)['frames']] == [[]] * FRAMES


def test_haar_detector_or_a_clear_reason():
  try:
    detect = webcam.haar_detector()
  except webcam.WebcamError as e:
    assert 'opencv-python-headless<5' in str(e)
    return
  assert detect(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).shape == (0, 4)


def test_one_euro_filter():
  smoother = webcam.OneEuroFilter(min_cutoff=1.0, beta=0.0)
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
  fast = webcam.OneEuroFilter(min_cutoff=1.0, beta=1.0)
  for t in range(10):
    out = fast(np.full((1, 68, 2), 100.0 * t), t / 30)
  assert abs(out[0, 0, 0] - 900) < 30


def test_missing_model_and_source(setup, tmp_path):
  with pytest.raises(FileNotFoundError, match='export.py'):
    webcam.run(setup['photo'], str(tmp_path / 'none'), headless=True,
               log=_quiet)
  assert webcam.DEFAULT_MODEL == os.path.join(REPO, 'pretrained')
  with pytest.raises(webcam.WebcamError, match='missing.mp4'):
    webcam.run(str(tmp_path / 'missing.mp4'), setup['export_dir'],
               headless=True, detector='full_frame', log=_quiet)
  with pytest.raises(webcam.WebcamError, match='--output'):
    webcam.run(setup['video'], setup['export_dir'], headless=True,
               detector='full_frame', output=str(tmp_path / 'x.jpg'),
               log=_quiet)


def test_window_without_gui_says_headless(setup):
  if 'NONE' not in [line for line in cv2.getBuildInformation().splitlines()
                    if 'GUI:' in line][0]:
    pytest.skip('this OpenCV has a GUI')
  with pytest.raises(webcam.WebcamError, match='--headless'):
    webcam.run(setup['photo'], setup['export_dir'], detector='full_frame',
               log=_quiet)


def test_command_line_exit_code(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'webcam.py'), '--headless',
       f'--model={tmp_path}', f'--source={tmp_path / "nope.avi"}'],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode != 0
  assert 'nope.avi' in result.stderr.splitlines()[-1]
