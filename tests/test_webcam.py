"""The live package and webcam.py, headless: generated videos and photos with
a tiny model, the bundled photo with the shipped one."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from facelandmark import detectors
from facelandmark import media
from facelandmark import smoothing
from facelandmark import command
from facelandmark.errors import WebcamError
from facelandmark import landmarker as runtime
from pipeline import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTO = os.path.join(REPO, 'assets', 'eileen_collins_nasa.jpg')
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
  """command.run headless on full frames with the tiny model."""
  config = command.WebcamConfig(
      source=source, **{'model': setup['export_dir'], 'headless': True,
                        'detector': 'full_frame', **options})
  return command.run(config, log=log)


def _read_json(path):
  with open(path) as f:
    return json.load(f)


def _no_faces(frame):
  del frame
  return detectors.Detections(np.zeros((0, 4)), np.zeros(0))


def _no_faces_detector(name, num_threads=None):
  del name, num_threads
  return _no_faces


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
  settings = document['settings']
  assert settings['source'] == setup['video']
  assert settings['source_kind'] == 'video'
  assert settings['detector'] == 'full_frame' and settings['smoothing']
  assert settings['track'] and settings['detect_every'] == 10
  frames = document['frames']
  assert [f['frame'] for f in frames] == list(range(FRAMES))
  assert frames[3]['time'] == pytest.approx(0.3)
  assert all(f['image'] is None and (f['width'], f['height']) == (WIDTH, HEIGHT)
             for f in frames)
  for frame in frames:
    (face,) = frame['faces']
    assert list(face) == ['id', 'box', 'score', 'landmarks']
    assert face['score'] == 1
    assert np.array(face['landmarks']).shape == (68, 2)
  assert frames[0]['faces'][0]['box'] == [0, 0, WIDTH, HEIGHT]
  capture = cv2.VideoCapture(output)
  assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == FRAMES
  capture.release()


def test_photo_headless_with_tflite(setup, tmp_path):
  output, landmarks = str(tmp_path / 'out.jpg'), str(tmp_path / 'lm.json')
  model = os.path.join(setup['export_dir'],
                       runtime.tflite_name('float32'))
  _run(setup, setup['photo'], model=model, output=output, json=landmarks,
       num_threads=1)
  (frame,) = _read_json(landmarks)['frames']
  assert frame['image'] == setup['photo'] and frame['time'] is None
  assert (frame['width'], frame['height']) == (WIDTH, HEIGHT)
  assert np.array(frame['faces'][0]['landmarks']).shape == (68, 2)
  assert cv2.imread(output).shape == (HEIGHT, WIDTH, 3)


def test_frames_without_faces(setup, tmp_path, monkeypatch):
  landmarks = str(tmp_path / 'lm.json')
  monkeypatch.setattr(detectors, 'make_detector', _no_faces_detector)
  summary = _run(setup, setup['video'], json=landmarks, smoothing=True)
  assert summary['frames_with_faces'] == 0
  assert [f['faces'] for f in _read_json(landmarks)['frames']] == [[]] * FRAMES


def test_haar_detector_or_a_clear_reason():
  try:
    detect = detectors.haar_detector()
  except WebcamError as e:
    assert 'opencv-python-headless<5' in str(e)
    return
  assert detect(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).boxes.shape == (0, 4)


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
  assert command.WebcamConfig().model == runtime.SHIPPED_MODEL
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
    ('', 'holds no images')])
def test_command_line_says_what_is_wrong_in_one_line(tmp_path, source, says):
  code, last_line = _command_line(f'--model={tmp_path}',
                                  f'--source={tmp_path / source}')
  assert code != 0
  assert last_line.startswith(f'webcam: --source={tmp_path / source}')
  assert says in last_line and '.png' in last_line


def test_sources_name_what_is_accepted(tmp_path):
  notes = tmp_path / 'notes.txt'
  notes.write_text('not a video')
  for source, says in [(tmp_path / 'gone.mp4', 'does not exist'),
                       (notes, 'is neither an image, a folder, a video file')]:
    with pytest.raises(WebcamError, match=says) as error:
      media.Source(str(source))
    assert f'--source={source}' in str(error.value)
    assert '.png' in str(error.value) and '.mp4' in str(error.value)
    assert 'a folder of images' in str(error.value)


def _fail_on_frames(name, num_threads=None):
  """A detector factory whose detector fails the test if any frame is seen."""
  del name, num_threads

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
    monkeypatch.setattr(media, 'open', _full_disk, raising=False)
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


def _full_disk(path, *args, **kwargs):
  """open() for files whose writes fail as on a full disk."""
  opened = open(path, *args, **kwargs)  # pylint: disable=unspecified-encoding

  class Full:
    def write(self, text):
      del text
      raise OSError('No space left on device')

    def close(self):
      opened.close()

  return Full()


def _json_output(path, records):
  with media.JsonOutput(str(path), {'format': 'x'}, 'frames') as output:
    for record in records:
      output.write(record)
    output.save({'skipped': []})


def test_json_is_written_whole_or_not_at_all(tmp_path):
  path = tmp_path / 'lm.json'
  _json_output(path, [1, {'a': [2]}])
  assert _read_json(path) == {'format': 'x', 'frames': [1, {'a': [2]}],
                              'skipped': []}
  with pytest.raises(TypeError):
    _json_output(path, [3, object()])
  assert _read_json(path)['frames'] == [1, {'a': [2]}]
  assert os.listdir(tmp_path) == ['lm.json']


def test_frame_rate_only_for_video_and_camera(setup, tmp_path, monkeypatch):
  monkeypatch.setattr(detectors, 'make_detector', _no_faces_detector)
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
  load = runtime.Landmarker.load

  def load_naming_its_file(path, num_threads=None):
    landmarker = load(path, num_threads)
    landmarker.source = os.path.join(path, 'chosen.tflite')
    return landmarker

  monkeypatch.setattr(runtime.Landmarker, 'load', load_naming_its_file)
  logged = []
  _run(setup, setup['photo'], log=logged.append)
  assert any(line.startswith(
      f'Model: {os.path.join(setup["export_dir"], "chosen.tflite")} (')
             for line in logged)


# Folders of photos, with the shipped model and detector.


def _shipped(source, log=lambda *_: None, **options):
  """command.run headless with the shipped model and BlazeFace."""
  return command.run(command.WebcamConfig(
      source=str(source), headless=True, num_threads=1, **options), log=log)


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  """A folder: the bundled photo as JPEG, grey PNG, RGBA PNG, 16-bit PNG
  (in a subfolder) and a broken file; not images beside them."""
  folder = tmp_path_factory.mktemp('photos')
  bgr = cv2.imread(PHOTO)
  (folder / 'sub' / 'deeper').mkdir(parents=True)
  (folder / '.hidden').mkdir()
  cv2.imwrite(str(folder / 'b_colour.JPG'), bgr)
  cv2.imwrite(str(folder / 'a_grey.png'), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
  cv2.imwrite(str(folder / 'sub' / 'rgba.png'),
              cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
  cv2.imwrite(str(folder / 'sub' / 'deeper' / 'deep16.png'),
              bgr.astype(np.uint16) * 257)
  (folder / 'sub' / 'broken.jpg').write_bytes(b'not a jpeg')
  (folder / 'notes.txt').write_text('not an image')
  cv2.imwrite(str(folder / '.hidden' / 'skip.png'), bgr)
  return folder


def test_a_folder_recursively_in_relative_path_order(photos, tmp_path):
  output, landmarks = tmp_path / 'annotated', tmp_path / 'faces.json'
  logged = []
  summary = _shipped(photos, log=logged.append, output=str(output),
                     json=str(landmarks), pose=True)
  names = ['a_grey.png', 'b_colour.JPG', 'sub/deeper/deep16.png',
           'sub/rgba.png']
  assert summary['frames'] == summary['frames_with_faces'] == 4
  assert summary['skipped'] == 1 and summary['fps'] is None
  warnings = [line for line in logged if line.startswith('Warning')]
  assert warnings == [f'Warning: skipped {photos / "sub" / "broken.jpg"}: '
                      'OpenCV cannot read this image (not an image, damaged, '
                      'or in a format this OpenCV lacks)']
  assert '4 images, 4 with faces, 1 unreadable skipped' in logged[-1]
  document = _read_json(landmarks)
  assert document['skipped'] == ['sub/broken.jpg']
  assert [r['image'] for r in document['frames']] == names
  assert [r['width'] for r in document['frames']][3] == 512
  faces = [r['faces'] for r in document['frames']]
  assert all(len(f) == 1 and list(f[0]) == ['box', 'score', 'landmarks',
                                            'pose'] for f in faces)
  colour = np.array(faces[1][0]['landmarks'])
  for (face,) in faces:  # Grey, RGBA and 16-bit read as the colour JPEG.
    assert np.abs(np.array(face['landmarks']) - colour).max() < 2
  written = sorted(str(p.relative_to(output)) for p in output.rglob('*.*'))
  assert written == sorted(names)
  assert cv2.imread(str(output / 'sub' / 'rgba.png')).shape == (512, 512, 3)


def test_a_huge_photo_in_a_folder(tmp_path):
  folder, output = tmp_path / 'huge', tmp_path / 'out'
  folder.mkdir()
  huge = np.zeros((6000, 8000, 3), np.uint8)
  huge[500:5620, 1000:6120] = cv2.resize(cv2.imread(PHOTO), (5120, 5120))
  cv2.imwrite(str(folder / 'huge.jpg'), huge)
  summary = _shipped(folder, output=str(output), json=str(tmp_path / 'f.json'))
  assert summary['frames_with_faces'] == 1
  assert cv2.imread(str(output / 'huge.jpg')).shape == (6000, 8000, 3)


@pytest.mark.parametrize('files', [[], ['notes.txt', 'clip.mp4']])
def test_a_folder_without_images_names_the_folder(tmp_path, files):
  for name in files:
    (tmp_path / name).write_text('x')
  with pytest.raises(WebcamError, match=f'--source={tmp_path} holds no images'):
    media.Source(str(tmp_path))


@pytest.mark.parametrize('output, says', [
    ('missing/out', 'folder .*missing does not exist'),
    ('taken.txt', 'is a file but --source=.* is a folder'),
    ('out.jpg', 'names a file but --source=.* is a folder'),
    ('photos/annotated', 'is inside --source'),
    ('photos', 'is inside --source'),
])
def test_an_output_folder_is_checked_before_the_first_image(
    tmp_path, monkeypatch, output, says):
  source = tmp_path / 'photos'
  source.mkdir()
  cv2.imwrite(str(source / 'a.png'), np.zeros((8, 8, 3), np.uint8))
  (tmp_path / 'taken.txt').write_text('keep me')
  monkeypatch.setattr(detectors, 'make_detector', _fail_on_frames)
  with pytest.raises(WebcamError,
                     match=f'--output={tmp_path / output}.*{says}'):
    _shipped(source, output=str(tmp_path / output),
             json=str(tmp_path / 'faces.json'))
  assert sorted(os.listdir(tmp_path)) == ['photos', 'taken.txt']
  assert os.listdir(source) == ['a.png']


# Tracking, pose, and video and camera streams that end early.


@pytest.fixture(scope='module')
def moving_photo(tmp_path_factory):
  """A 30-frame 320 x 240 video of the bundled photo's face moving right."""
  path = str(tmp_path_factory.mktemp('moving') / 'moving.avi')
  crop = cv2.imread(PHOTO)[40:240, 124:324]
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'MJPG'), 30,
                           (320, 240))
  for k in range(30):
    frame = np.full((240, 320, 3), 128, np.uint8)
    frame[20:220, 20 + 2 * k:220 + 2 * k] = crop
    writer.write(frame)
  writer.release()
  return path


def _counting(calls):
  """A make_detector whose detectors count their frames in `calls`."""
  make = detectors.make_detector

  def make_counting(name, num_threads=None):
    detect = make(name, num_threads)

    def counted(frame):
      calls.append(1)
      return detect(frame)

    return counted

  return make_counting


@pytest.mark.parametrize('options, detections', [
    ({}, 3), ({'detect_every': 4}, 8), ({'track': False}, 30)])
def test_video_faces_are_tracked_with_ids(moving_photo, tmp_path, monkeypatch,
                                          options, detections):
  calls = []
  monkeypatch.setattr(detectors, 'make_detector', _counting(calls))
  landmarks = tmp_path / 'faces.json'
  _shipped(moving_photo, json=str(landmarks), smoothing=True, pose=True,
           **options)
  assert len(calls) == detections
  document = _read_json(landmarks)
  assert document['settings']['track'] == options.get('track', True)
  faces = [f['faces'] for f in document['frames']]
  assert all(len(f) == 1 and f[0]['id'] == 0 and 'pose' in f[0]
             for f in faces)
  # The points move with the face, 2 px a frame.
  moved = np.median(np.subtract(faces[-1][0]['landmarks'],
                                faces[0][0]['landmarks']), axis=0)
  np.testing.assert_allclose(moved, [58, 0], atol=2)


def test_detect_every_must_be_positive(setup):
  with pytest.raises(WebcamError, match='--detect_every must be at least 1'):
    _run(setup, setup['video'], detect_every=0)


def test_a_truncated_video_keeps_what_it_read_and_says_so(setup, tmp_path):
  video = tmp_path / 'cut.avi'
  with open(setup['video'], 'rb') as f:
    data = f.read()
  video.write_bytes(data[:len(data) * 6 // 10])
  landmarks, output, logged = tmp_path / 'lm.json', tmp_path / 'out.avi', []
  summary = _run(setup, str(video), log=logged.append, json=str(landmarks),
                 output=str(output))
  read = summary['frames']
  assert 0 < read < FRAMES
  assert f'read {read} of the {FRAMES} frames the file declares' in (
      summary['stopped'])
  assert any(line.startswith('Warning: --source=') and 'truncated' in line
             for line in logged)
  assert len(_read_json(landmarks)['frames']) == read
  capture = cv2.VideoCapture(str(output))
  assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == read
  capture.release()


class FailingCamera:
  """cv2.VideoCapture for a camera that gives `frames` frames, then fails."""
  frames = 4

  def __init__(self, index):
    del index
    self.read_count = 0

  def read(self):
    self.read_count += 1
    if self.read_count > self.frames:
      raise cv2.error('camera unplugged')
    frame, _ = synthetic.render_image(np.random.default_rng(0), WIDTH, HEIGHT,
                                      1)
    return True, frame

  def get(self, prop):
    del prop
    return 0

  def release(self):
    pass


def test_a_camera_failing_mid_stream_stops_cleanly(setup, tmp_path,
                                                   monkeypatch):
  monkeypatch.setattr(cv2, 'VideoCapture', FailingCamera)
  landmarks, output, logged = tmp_path / 'lm.json', tmp_path / 'out.avi', []
  summary = _run(setup, '0', log=logged.append, json=str(landmarks),
                 output=str(output))
  assert summary['frames'] == FailingCamera.frames
  assert 'camera stopped giving frames after 4' in summary['stopped']
  assert 'camera unplugged' in summary['stopped']
  assert any('camera unplugged' in line for line in logged)
  assert len(_read_json(landmarks)['frames']) == FailingCamera.frames
  assert os.path.getsize(output) > 0


def test_a_video_without_a_readable_frame_says_why(tmp_path):
  video = tmp_path / 'cut.mp4'
  writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'mp4v'), 10,
                           (WIDTH, HEIGHT))
  for _ in range(3):
    writer.write(np.zeros((HEIGHT, WIDTH, 3), np.uint8))
  writer.release()
  video.write_bytes(video.read_bytes()[:-200])  # Its index is at the end.
  with pytest.raises(WebcamError, match='cannot read a frame from this '
                     'video: damaged or truncated'):
    media.Source(str(video))
