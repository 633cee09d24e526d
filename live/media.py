"""Frames in (camera, video, image); annotated frames and JSON out; the window.

Everything that can fail before the first frame does: the source gives its
first frame on opening, outputs are checked before any work (and the video
writer opens before the loop), so a bad flag costs no processing.
"""

import contextlib
import json
import os
import time

import cv2

from live.errors import WebcamError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg',
                    '.mpeg', '.wmv')
VIDEO_CODECS = {'.mp4': 'mp4v', '.avi': 'MJPG'}  # The videos we write.
WINDOW = 'facelandmark (q or Esc quits)'
FALLBACK_FPS = 30.0  # For video files that do not say their frame rate.
SOURCES_ACCEPTED = (f'pass an image ({", ".join(IMAGE_EXTENSIONS)}), a video '
                    f'file ({", ".join(VIDEO_EXTENSIONS)}) or a camera index '
                    '(0, 1, ...)')


def _extension(path):
  return os.path.splitext(path)[1].lower()


def source_kind(source):
  """'camera', 'image' or 'video' for --source; else says what is accepted."""
  if source.isdigit():
    return 'camera'
  if os.path.isdir(source):
    raise WebcamError(f'--source={source} is a folder: folder input is not '
                      f'supported yet; {SOURCES_ACCEPTED}')
  if not os.path.exists(source):
    raise WebcamError(f'--source={source} does not exist; {SOURCES_ACCEPTED}')
  if _extension(source) in IMAGE_EXTENSIONS:
    return 'image'
  if _extension(source) in VIDEO_EXTENSIONS:
    return 'video'
  raise WebcamError(f'--source={source} is neither an image, a video file nor '
                    f'a camera index; {SOURCES_ACCEPTED}')


class Source:
  """Frames of a camera, a video file or one image, opened on construction.

  The first frame is read on opening: a source without frames fails before
  the model loads, and `size` is known to the video writer. Iterating gives
  (frame index, time in seconds, BGR frame): camera frames are timed by the
  clock, video frames by their frame rate.
  """

  def __init__(self, source):
    self.name = source
    self.kind = source_kind(source)
    self.fps = FALLBACK_FPS
    self._capture = None
    if self.kind == 'image':
      self._first = cv2.imread(source)
      if self._first is None:
        raise WebcamError(f'--source={source}: OpenCV cannot read this image')
    else:
      self._capture = cv2.VideoCapture(int(source) if self.kind == 'camera'
                                       else source)
      self._first = self._read()
      if self._first is None:
        self.close()
        raise WebcamError(f'--source={source}: cannot read a frame from this '
                          f'{self.kind}')
      self.fps = self._capture.get(cv2.CAP_PROP_FPS) or FALLBACK_FPS
    height, width = self._first.shape[:2]
    self.size = (width, height)

  def _read(self):
    ok, frame = self._capture.read() if self._capture else (False, None)
    return frame if ok else None

  def __iter__(self):
    frame, index = self._first, 0
    while frame is not None:
      yield index, (time.monotonic() if self.kind == 'camera'
                    else index / self.fps), frame
      frame, index = self._read(), index + 1

  def close(self):
    if self._capture is not None:
      self._capture.release()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()


def check_writable(path, flag):
  """Raises unless `path` names a file that can be written, in a folder that
  exists: checked before the first frame, not found out after the last."""
  if os.path.isdir(path):
    raise WebcamError(f'{flag}={path} is a folder: name a file')
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise WebcamError(f'{flag}={path}: folder {folder} does not exist')
  if not os.access(folder, os.W_OK) or (os.path.exists(path) and
                                        not os.access(path, os.W_OK)):
    raise WebcamError(f'{flag}={path} is not writable')


def check_output(path, kind):
  """Raises unless --output `path` can hold frames of a `kind` source."""
  extension = _extension(path)
  if extension not in IMAGE_EXTENSIONS and extension not in VIDEO_CODECS:
    raise WebcamError(f'--output={path}: use an image '
                      f'({", ".join(IMAGE_EXTENSIONS)}) or a video '
                      f'({", ".join(VIDEO_CODECS)})')
  if extension in IMAGE_EXTENSIONS and kind != 'image':
    raise WebcamError(f'--output={path} is an image but --source is a '
                      f'{kind}: use {" or ".join(VIDEO_CODECS)}')
  check_writable(path, '--output')


class Output:
  """Annotated frames to a video file, or the last one to an image file.

  A video is opened on construction (`size` is (width, height)), so a codec
  this OpenCV lacks fails before the first frame, and released on leaving
  `with`, whatever happened; an image is written by `save`.
  """

  def __init__(self, path, size, fps):
    self.path = path
    self._last = self._writer = None
    codec = VIDEO_CODECS.get(_extension(path))
    if codec:
      self._writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codec), fps,
                                     size)
      if not self._writer.isOpened():
        raise WebcamError(f'--output={path}: OpenCV cannot write {codec} '
                          'video here')

  def write(self, frame):
    if self._writer:
      self._writer.write(frame)
    else:
      self._last = frame

  def save(self):
    """Writes the image (a video is complete once released)."""
    if self._last is not None and not cv2.imwrite(self.path, self._last):
      raise WebcamError('OpenCV could not write the image')

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    if self._writer:
      self._writer.release()


def write_json(path, data):
  """`data` as JSON at `path`, whole or not at all: a temporary file renamed
  over it, removed if anything fails."""
  temporary = f'{path}.tmp'
  try:
    with open(temporary, 'w', encoding='utf-8') as f:
      json.dump(data, f)
    os.replace(temporary, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(temporary)
    raise


class Window:
  """The live window, opened on construction; or why there is none:
  opencv-python-headless (this project's default) has no GUI."""

  def __init__(self):
    try:
      cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error as e:
      raise WebcamError(
          'this OpenCV cannot open a window (opencv-python-headless has no '
          'GUI): run with --headless and --output/--json, or install '
          'opencv-python for a live window. OpenCV said: '
          f'{str(e).strip().splitlines()[-1]}') from e

  def show(self, frame):
    """Shows `frame`; False once q or Esc is pressed."""
    cv2.imshow(WINDOW, frame)
    return cv2.waitKey(1) & 0xFF not in (ord('q'), 27)

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    cv2.destroyAllWindows()
