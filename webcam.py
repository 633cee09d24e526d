"""Live landmarks: camera, video or photo in; annotated frames and JSON out.

  python webcam.py                                    # camera 0, in a window
  python webcam.py --source=talk.mp4 --output=annotated.mp4 \
      --json=landmarks.json --headless
  python webcam.py --source=photo.jpg --output=annotated.jpg --headless

Faces are found by OpenCV's Haar cascade (shipped inside OpenCV 4), or
--detector=full_frame takes each whole frame as the face box (for videos or
photos already cropped to one face, or faces no cascade finds). The landmarker
runs twice per face by default (--refine): Haar boxes are framed differently
from the tight landmark boxes the net was trained on, and the second pass sees
a view framed like its training views. --smoothing applies a One Euro filter to
every point across frames.

JSON landmarks are in corner coordinates: pixel (i, j) covers [i, i+1) x
[j, j+1) (pipeline/geometry.py).
"""

import json
import math
import os
import sys
import time

from absl import app
from absl import flags
import cv2
import numpy as np

from model import landmarker as landmarker_lib

DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             'pretrained')
DETECTORS = ('haar', 'full_frame')
HAAR_CASCADE = 'haarcascade_frontalface_default.xml'
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')
VIDEO_CODECS = {'.mp4': 'mp4v', '.avi': 'MJPG'}
WINDOW = 'facelandmark (q or Esc quits)'
FALLBACK_FPS = 30.0  # For video files that do not say their frame rate.


class WebcamError(Exception):
  """A source, output or display that cannot be used; the message says why."""


# Face detection: BGR frame -> [K, 4] boxes in corner coordinates.


def haar_detector(min_face=0.1):
  """Haar cascade detector; skips faces smaller than `min_face` of the frame."""
  folder = getattr(getattr(cv2, 'data', None), 'haarcascades', '')
  path = os.path.join(folder, HAAR_CASCADE)
  if not hasattr(cv2, 'CascadeClassifier') or not os.path.isfile(path):
    raise WebcamError(
        f'OpenCV {cv2.__version__} has no Haar cascade ({HAAR_CASCADE}); '
        'OpenCV 5 moved cascades out of its main package. Install OpenCV 4 '
        '(pip install "opencv-python-headless<5", or "opencv-python<5" for a '
        'window) or use --detector=full_frame on face crops.')
  cascade = cv2.CascadeClassifier(path)

  def detect(frame):
    grey = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    side = max(1, int(min_face * min(grey.shape)))
    found = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5,
                                     minSize=(side, side))
    # (x, y, w, h) in whole pixels: pixel x covers [x, x+1), so the box is
    # [x, x + w) in corner coordinates.
    return np.array([[x, y, x + w, y + h] for x, y, w, h in found],
                    np.float64).reshape(-1, 4)

  return detect


def full_frame_detector(frame):
  height, width = frame.shape[:2]
  return np.array([[0.0, 0.0, width, height]])


def make_detector(name):
  if name == 'haar':
    return haar_detector()
  if name == 'full_frame':
    return full_frame_detector
  raise WebcamError(f'--detector must be one of {DETECTORS}, got {name!r}')


def left_to_right(boxes):
  """Boxes sorted by centre x: a stable face order for smoothing."""
  return boxes[np.argsort(boxes[:, 0] + boxes[:, 2], kind='stable')]


# Smoothing.


def _alpha(cutoff, dt):
  """Exponential smoothing factor of a first-order low-pass at `cutoff` Hz."""
  tau = 1.0 / (2 * math.pi * cutoff)
  return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
  """One Euro filter (Casiez et al., CHI 2012) for [..., 2] points.

  A low-pass whose cutoff rises with each point's speed: still points are
  smoothed hard (no jitter), moving ones lightly (little lag). Reset when the
  array's shape changes (a face appeared or left).
  """

  def __init__(self, min_cutoff=1.0, beta=0.05, d_cutoff=1.0):
    self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
    self._previous = None  # (time, points, velocity)

  def __call__(self, points, t):
    points = np.asarray(points, np.float64)
    if self._previous is None or self._previous[1].shape != points.shape:
      self._previous = (t, points, np.zeros_like(points))
      return points
    t0, previous, previous_velocity = self._previous
    dt = max(t - t0, 1e-6)
    a = _alpha(self.d_cutoff, dt)
    velocity = a * (points - previous) / dt + (1 - a) * previous_velocity
    speed = np.linalg.norm(velocity, axis=-1, keepdims=True)
    a = _alpha(self.min_cutoff + self.beta * speed, dt)
    smoothed = a * points + (1 - a) * previous
    self._previous = (t, smoothed, velocity)
    return smoothed


# Sources and outputs.


def _is_image(path):
  return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


class Source:
  """Frames of a camera, a video file or one image, opened on construction.

  Iterating gives (frame index, time in seconds, BGR frame): camera frames are
  timed by the clock, video frames by their frame rate.
  """

  def __init__(self, source):
    self.name = source
    self.is_image = _is_image(source)
    self._capture = self._image = None
    if self.is_image:
      self._image = cv2.imread(source) if os.path.isfile(source) else None
      if self._image is None:
        raise WebcamError(f'cannot read image {source} (--source): missing or '
                          'not an image')
      self.fps = FALLBACK_FPS
      return
    if not source.isdigit() and not os.path.isfile(source):
      raise WebcamError(f'video {source} does not exist (--source)')
    self._capture = cv2.VideoCapture(int(source) if source.isdigit()
                                     else source)
    if not self._capture.isOpened():
      kind = 'camera' if source.isdigit() else 'video'
      raise WebcamError(f'cannot open {kind} {source} (--source)')
    self.fps = self._capture.get(cv2.CAP_PROP_FPS) or FALLBACK_FPS
    self._is_camera = source.isdigit()

  def __iter__(self):
    if self.is_image:
      yield 0, 0.0, self._image
      return
    index = 0
    while True:
      ok, frame = self._capture.read()
      if not ok:
        return
      yield index, (time.monotonic() if self._is_camera
                    else index / self.fps), frame
      index += 1

  def close(self):
    if self._capture is not None:
      self._capture.release()


class Output:
  """Annotated frames to an image file (the last frame) or a video file."""

  def __init__(self, path, source_is_image, fps):
    self.path, self.fps = path, fps
    extension = os.path.splitext(path)[1].lower()
    if extension not in IMAGE_EXTENSIONS and extension not in VIDEO_CODECS:
      raise WebcamError(f'--output={path}: use an image '
                        f'({", ".join(IMAGE_EXTENSIONS)}) or a video '
                        f'({", ".join(VIDEO_CODECS)})')
    if extension in IMAGE_EXTENSIONS and not source_is_image:
      raise WebcamError(f'--output={path} is an image but --source is a video '
                        f'or camera: use {" or ".join(VIDEO_CODECS)}')
    self._codec = VIDEO_CODECS.get(extension)
    self._writer = None
    self._last = None

  def write(self, frame):
    if self._codec is None:
      self._last = frame
      return
    if self._writer is None:
      height, width = frame.shape[:2]
      self._writer = cv2.VideoWriter(self.path,
                                     cv2.VideoWriter_fourcc(*self._codec),
                                     self.fps, (width, height))
      if not self._writer.isOpened():
        raise WebcamError(f'cannot write video {self.path} (--output)')
    self._writer.write(frame)

  def close(self):
    if self._writer is not None:
      self._writer.release()
    if self._last is not None and not cv2.imwrite(self.path, self._last):
      raise WebcamError(f'cannot write image {self.path} (--output)')


def check_display():
  """Opens the window, or says why there is none: opencv-python-headless (this
  project's default) has no GUI."""
  try:
    cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
  except cv2.error as e:
    raise WebcamError(
        'this OpenCV cannot open a window (opencv-python-headless has no GUI):'
        ' run with --headless and --output/--json, or install opencv-python '
        f'for a live window. OpenCV said: {str(e).strip().splitlines()[-1]}'
    ) from e


def _cv_point(xy):
  """Corner coordinates -> OpenCV fixed-point pixel-centre coordinates."""
  return tuple(int(round((v - 0.5) * 16)) for v in xy)


def draw(frame, boxes, landmarks, fps):
  """Boxes (green), landmarks (red) and the frame rate on a copy of `frame`."""
  canvas = frame.copy()
  radius = max(1.0, min(frame.shape[:2]) / 240)
  for box, points in zip(boxes, landmarks):
    cv2.rectangle(canvas, _cv_point(box[:2]), _cv_point(box[2:]), (0, 255, 0),
                  1, cv2.LINE_AA, 4)
    for point in points:
      cv2.circle(canvas, _cv_point(point), int(radius * 16), (0, 0, 255), -1,
                 cv2.LINE_AA, 4)
  cv2.putText(canvas, f'{fps:.1f} FPS', (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
              (255, 255, 255), 1, cv2.LINE_AA)
  return canvas


def _write_json(path, data):
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(data, f)
  os.replace(tmp, path)


# The loop.


def run(source='0', model=DEFAULT_MODEL, *, output=None, json_path=None,
        headless=False, detector='haar', refine=True, smoothing=False,
        min_cutoff=1.0, beta=0.05, num_threads=None, max_frames=None,
        log=print):
  """Detects faces and landmarks frame by frame; returns a summary dict."""
  if not os.path.exists(model):
    raise FileNotFoundError(
        f'no model at {model}: export one with `python export.py '
        '--workdir=RUN --export_dir=DIR` and pass --model=DIR (or a .tflite '
        'file in it)')
  if headless and not (output or json_path):
    log('Headless without --output or --json: the results are not kept.')
  if not headless:
    check_display()
  frames = Source(source)
  writer = None
  records, fps, frames_with_faces = [], 0.0, 0
  try:
    writer = Output(output, frames.is_image, frames.fps) if output else None
    find_faces = make_detector(detector)
    landmarker = landmarker_lib.Landmarker.load(model, num_threads)
    smoother = OneEuroFilter(min_cutoff, beta) if smoothing else None
    tick = time.perf_counter()
    for index, t, frame in frames:
      boxes = left_to_right(find_faces(frame))
      landmarks = landmarker.predict(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB),
                                     boxes, refine=refine)
      if smoother:
        landmarks = smoother(landmarks, t)
      now = time.perf_counter()
      rate = 1.0 / max(now - tick, 1e-9)
      fps = rate if not records else 0.9 * fps + 0.1 * rate
      tick = now
      frames_with_faces += bool(len(boxes))
      records.append({'frame': index, 'time': round(t, 4), 'faces': [
          {'box': box.tolist(), 'landmarks': np.round(points, 3).tolist()}
          for box, points in zip(boxes, landmarks)]})
      if writer or not headless:
        annotated = draw(frame, boxes, landmarks, fps)
      if writer:
        writer.write(annotated)
      if not headless:
        cv2.imshow(WINDOW, annotated)
        if cv2.waitKey(1) & 0xFF in (ord('q'), 27):
          break
      if max_frames and len(records) >= max_frames:
        break
  except KeyboardInterrupt:
    log('Interrupted: writing what was processed.')
  finally:
    frames.close()
    if writer:
      writer.close()
    if not headless:
      cv2.destroyAllWindows()
  summary = {'frames': len(records), 'frames_with_faces': frames_with_faces,
             'fps': round(fps, 2)}
  if json_path:
    _write_json(json_path, {
        'source': source, 'model': model, 'detector': detector,
        'refine': refine, 'smoothing': smoothing,
        'coordinates': 'corner: pixel (i, j) covers [i, i+1) x [j, j+1)',
        'frames': records})
  log(f'{summary["frames"]} frames, {frames_with_faces} with faces, '
      f'{summary["fps"]} FPS' +
      ''.join(f'; wrote {p}' for p in (output, json_path) if p))
  return summary


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('source', '0', 'Camera index, video file or image.')
  flags.DEFINE_string('model', DEFAULT_MODEL, 'Export folder (SavedModel) or '
                      'a .tflite file in it.')
  flags.DEFINE_string('output', None, 'Annotated image (.jpg, .png) or video '
                      '(.mp4, .avi).')
  flags.DEFINE_string('json', None, 'Landmarks of every frame, as JSON.')
  flags.DEFINE_bool('headless', False, 'No window (servers, '
                    'opencv-python-headless).')
  flags.DEFINE_enum('detector', 'haar', DETECTORS, 'haar: OpenCV\'s cascade; '
                    'full_frame: each frame is one face box.')
  flags.DEFINE_bool('refine', True, 'Second landmark pass on the first pass\'s '
                    'landmark box.')
  flags.DEFINE_bool('smoothing', False, 'One Euro filter on the points across '
                    'frames.')
  flags.DEFINE_float('min_cutoff', 1.0, 'Smoothing: cutoff (Hz) of still '
                     'points; lower is smoother.')
  flags.DEFINE_float('beta', 0.05, 'Smoothing: cutoff rise per pixel/s of '
                     'speed; higher lags less.')
  flags.DEFINE_integer('num_threads', None, 'TF Lite interpreter threads.')
  flags.DEFINE_integer('max_frames', None, 'Stop after this many frames.')


def main(argv):
  del argv
  try:
    run(FLAGS.source, FLAGS.model, output=FLAGS.output, json_path=FLAGS.json,
        headless=FLAGS.headless, detector=FLAGS.detector, refine=FLAGS.refine,
        smoothing=FLAGS.smoothing, min_cutoff=FLAGS.min_cutoff,
        beta=FLAGS.beta, num_threads=FLAGS.num_threads,
        max_frames=FLAGS.max_frames)
  except (WebcamError, FileNotFoundError, ValueError) as e:
    sys.exit(f'webcam: {e}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
