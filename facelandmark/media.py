"""Frames in (camera, video, image, folder); annotated frames and JSON out;
the window.

Everything that can fail before the first frame does: a camera, video or
image gives its first frame on opening, a folder its list of images, and
outputs are checked before any work (the video writer opens before the
loop), so a bad flag costs no processing.
"""

import contextlib
import json
import os
import time

import cv2
import numpy as np
import tqdm

from facelandmark.errors import WebcamError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg',
                    '.mpeg', '.wmv')
VIDEO_CODECS = {'.mp4': 'mp4v', '.avi': 'MJPG'}  # The videos we write.
WINDOW = 'facelandmark (q or Esc quits)'
FALLBACK_FPS = 30.0  # For video files that do not say their frame rate.
# Declared rates outside this range are no camera's: variable-rate recordings
# often declare 1000 (or 90000, a timestamp clock) and would time frames
# a millisecond apart, freezing the smoothing filter.
PLAUSIBLE_FPS = (1.0, 240.0)
# Frames read on opening a video to check its declared rate by their
# timestamps (before the first frame is processed).
RATE_PROBE_FRAMES = 8
# OpenCV takes a camera index as a C int.
MAX_CAMERA_INDEX = 2**31 - 1
SOURCES_ACCEPTED = (f'pass an image ({", ".join(IMAGE_EXTENSIONS)}), a folder '
                    f'of images, a video file ({", ".join(VIDEO_EXTENSIONS)}) '
                    'or a camera index (0, 1, ...)')


def _extension(path):
  return os.path.splitext(path)[1].lower()


def source_kind(source):
  """'camera', 'folder', 'image' or 'video' for --source; else says what is
  accepted."""
  if source.isdigit():
    if int(source) > MAX_CAMERA_INDEX:
      raise WebcamError(f'--source={source} is too large for a camera index '
                        f'(0 to {MAX_CAMERA_INDEX}); {SOURCES_ACCEPTED}')
    return 'camera'
  if os.path.isdir(source):
    return 'folder'
  if not os.path.exists(source):
    raise WebcamError(f'--source={source} does not exist; {SOURCES_ACCEPTED}')
  if _extension(source) in IMAGE_EXTENSIONS:
    return 'image'
  if _extension(source) in VIDEO_EXTENSIONS:
    return 'video'
  raise WebcamError(f'--source={source} is neither an image, a folder, a '
                    f'video file nor a camera index; {SOURCES_ACCEPTED}')


def truncated_jpeg(path):
  """Whether `path` is a JPEG without its end-of-image marker: cut short.
  OpenCV decodes such a file into a grey-bottomed half image without an
  error. The marker (FF D9) cannot occur inside entropy-coded data (an FF
  there is followed by 00), so a tail without it was cut."""
  if _extension(path) not in ('.jpg', '.jpeg'):
    return False
  with open(path, 'rb') as f:
    if f.read(2) != b'\xff\xd8':  # Not a JPEG at all: OpenCV says so.
      return False
    f.seek(max(os.path.getsize(path) - 1024, 0))
    return b'\xff\xd9' not in f.read()


def decode_image(path):
  """(BGR uint8 image, None) for the image file `path`, or (None, why it
  cannot be used)."""
  if truncated_jpeg(path):
    return None, 'truncated JPEG (no end-of-image marker)'
  image = cv2.imread(path)
  if image is None:
    return None, ('OpenCV cannot read this image (not an image, damaged, or '
                  'in a format this OpenCV lacks)')
  return image, None


def read_image(path):
  """The BGR uint8 image in file `path`; FileNotFoundError or ValueError
  naming it. (cv2.imread returns None for both, which np.asarray would turn
  into a shapeless array.)"""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such image file')
  image, why = decode_image(path)
  if image is None:
    raise ValueError(f'{path}: {why}')
  return image


def frame_rate(declared, stamps_ms):
  """(frames per second to time a video by, a warning or None) from its
  `declared` rate and the timestamps (ms) of its first frames: the declared
  rate when plausible and the timestamps agree (within 10%) or say nothing,
  else the timestamps' rate when plausible, else FALLBACK_FPS."""
  low, high = PLAUSIBLE_FPS
  gaps = np.diff(np.asarray(stamps_ms, np.float64)) / 1000
  gaps = gaps[gaps > 0]
  measured = 1 / float(np.median(gaps)) if len(gaps) else None
  if low <= declared <= high and (
      measured is None or not low <= measured <= high or
      abs(measured / declared - 1) < 0.1):
    return declared, None
  if measured is not None and low <= measured <= high:
    return measured, (f'it declares {declared:g} frames/s but its '
                      f'timestamps are {measured:.3g}/s apart: timing '
                      'frames by the timestamps')
  return FALLBACK_FPS, (f'it declares {declared:g} frames/s, which no camera '
                        f'records: timing frames at {FALLBACK_FPS:g}/s')


def image_files(folder):
  """Sorted '/'-separated paths, relative to `folder`, of the images in it and
  in its subfolders (IMAGE_EXTENSIONS, any case; hidden files and folders
  skipped); a WebcamError naming the folder if there are none."""
  found = []
  for root, folders, files in os.walk(folder):
    folders[:] = [f for f in folders if not f.startswith('.')]
    relative = os.path.relpath(root, folder)
    found += [os.path.normpath(os.path.join(relative, f)).replace(os.sep, '/')
              for f in files
              if _extension(f) in IMAGE_EXTENSIONS and not f.startswith('.')]
  if not found:
    raise WebcamError(f'--source={folder} holds no images '
                      f'({", ".join(IMAGE_EXTENSIONS)}), in it or in its '
                      'subfolders')
  return sorted(found)


class Source:
  """Frames of a camera, a video file, one image or a folder of images.

  Opened on construction: a camera, video or image reads its first frame (a
  source without frames fails before the model loads, and `size` is known
  to the video writer); a folder lists its images (`image_files`).

  Iterating gives (index, time, name, BGR uint8 frame): video frames are
  timed by their frame rate, camera frames by the clock from the first one,
  images not (None); `name` is a folder image's relative path (else None).
  A folder image OpenCV cannot read (or a truncated JPEG) is skipped, named to `warn` and listed in
  `skipped`. Once a video or camera runs out of frames on its own, `stopped`
  says why if it ended early: a camera read failing, or a video giving fewer
  frames than it declares (truncated or damaged). With `progress`, iterating
  a folder or a video file shows a progress bar (tqdm, on stderr).

  Attributes:
    name: --source.
    kind: 'camera', 'folder', 'image' or 'video'.
    size: (width, height) of the first frame (None for a folder).
    fps: the video's frame rate: the declared one, checked against its
      frames' timestamps (frame_rate); FALLBACK_FPS if neither is a
      camera's.
    count: how many frames or images there are, if known.
  """

  def __init__(self, source, warn=print, progress=False):
    self.name = source
    self.kind = source_kind(source)
    self.fps = FALLBACK_FPS
    self.size = self.count = self.stopped = None
    self.skipped = []
    self._warn, self._progress = warn, progress
    self._capture = self._error = None
    if self.kind == 'folder':
      self._files = image_files(source)
      self.count = len(self._files)
      return
    self._buffer = []  # frames read ahead, to check the video's frame rate
    if self.kind == 'image':
      self._first, why = decode_image(source)
      if self._first is None:
        raise WebcamError(f'--source={source}: {why}')
      self.count = 1
    else:
      self._capture = cv2.VideoCapture(int(source) if self.kind == 'camera'
                                       else source)
      self._first = self._read()
      if self._first is None:
        self.close()
        why = (': damaged or truncated (a cut .mp4 loses its index), or in '
               'a codec this OpenCV lacks' if self.kind == 'video' else '')
        raise WebcamError(f'--source={source}: cannot read a frame from this '
                          f'{self.kind}{why}{self._said()}')
      self.fps = self._capture.get(cv2.CAP_PROP_FPS) or FALLBACK_FPS
      if self.kind == 'video':
        self.count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        self._check_rate()
    height, width = self._first.shape[:2]
    self.size = (width, height)

  def _check_rate(self):
    """Sets `fps` from the declared rate and the first frames' timestamps,
    keeping the frames read for iteration."""
    stamps = [self._capture.get(cv2.CAP_PROP_POS_MSEC)]
    while len(self._buffer) < RATE_PROBE_FRAMES:
      frame = self._read()
      if frame is None:
        break
      self._buffer.append(frame)
      stamps.append(self._capture.get(cv2.CAP_PROP_POS_MSEC))
    self.fps, why = frame_rate(self.fps, stamps)
    if why:
      self._warn(f'--source={self.name}: {why}')

  def _next(self):
    return self._buffer.pop(0) if self._buffer else self._read()

  def _read(self):
    if self._capture is None:
      return None
    try:
      ok, frame = self._capture.read()
    except cv2.error as e:
      self._error = str(e).strip().splitlines()[-1]
      return None
    return frame if ok else None

  def _said(self):
    return f' (OpenCV said: {self._error})' if self._error else ''

  def __iter__(self):
    return self._images() if self.kind == 'folder' else self._frames()

  def _frames(self):
    frame, index, start = self._first, 0, time.monotonic()
    with self._bar(total=self.count, unit='frame') as bar:
      while frame is not None:
        yield index, (time.monotonic() - start if self.kind == 'camera'
                      else index / self.fps), None, frame
        bar.update()
        frame, index = self._next(), index + 1
    self.stopped = self._why_stopped(index)

  def _bar(self, *args, **kwargs):
    return tqdm.tqdm(*args, **kwargs, disable=not self._progress or
                     self.kind not in ('folder', 'video'))

  def _why_stopped(self, frames):
    """Why a video or camera gave no more than `frames` frames, if early."""
    if self.kind == 'camera':
      return (f'--source={self.name}: the camera stopped giving frames after '
              f'{frames}{self._said()}')
    if self.kind == 'video' and (self._error or frames < (self.count or 0)):
      return (f'--source={self.name}: read {frames} of the {self.count} '
              'frames the file declares: it is truncated or damaged'
              f'{self._said()}')
    return None

  def _images(self):
    with self._bar(self._files, unit='image') as files:
      for index, name in enumerate(files):
        frame, why = decode_image(os.path.join(self.name, name))
        if frame is None:
          self.skipped.append(name)
          self._warn(f'skipped {os.path.join(self.name, name)}: {why}')
          continue
        yield index, None, name, frame

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


def check_distinct(source, output=None, json_path=None):
  """Raises if --output or --json names the source file, or each other (or
  the other's temporary file): writing one would destroy the other. (A
  folder source is check_output_folder's.)"""
  named = [('--source', None if os.path.isdir(source) else source, ''), ('--output', output, ''),
           ('--json', json_path, '')]
  if output and VIDEO_CODECS.get(_extension(output)):
    named.append(('--output', output, ' (its temporary file)'))
  if json_path:
    named.append(('--json', json_path, ' (its temporary file)'))
  seen = {}
  for flag, path, what in named:
    if not path:
      continue
    real = os.path.realpath(temporary_video(path) if what and flag ==
                            '--output' else f'{path}.tmp' if what else path)
    if real in seen and seen[real][0] != flag:
      first, given, first_what = seen[real]
      raise WebcamError(f'{first}={given}{first_what} and {flag}={path}{what} '
                        'name the same file: writing one would destroy the '
                        'other; name another file')
    seen.setdefault(real, (flag, path, what))


def check_output(path, source):
  """Raises unless --output `path` can hold the annotated frames of `source`
  (a Source): an image for an image, a video for a video or camera, a folder
  for a folder (check_output_folder)."""
  if source.kind == 'folder':
    check_output_folder(path, source.name)
    return
  extension = _extension(path)
  if extension not in IMAGE_EXTENSIONS and extension not in VIDEO_CODECS:
    raise WebcamError(f'--output={path}: use an image '
                      f'({", ".join(IMAGE_EXTENSIONS)}) or a video '
                      f'({", ".join(VIDEO_CODECS)})')
  if extension in IMAGE_EXTENSIONS and source.kind != 'image':
    raise WebcamError(f'--output={path} is an image but --source is a '
                      f'{source.kind}: use {" or ".join(VIDEO_CODECS)}')
  check_writable(path, '--output')


def check_output_folder(path, source):
  """Raises unless --output `path` can take the annotated copies of the images
  in folder `source`: an existing folder or a new one in an existing folder,
  writable, and outside `source` (copies there would replace its images, or
  join them on the next run)."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise WebcamError(f'--output={path} is a file but --source={source} is a '
                      'folder: name a folder for the annotated copies')
  if not os.path.exists(path) and (_extension(path) in IMAGE_EXTENSIONS or
                                   _extension(path) in VIDEO_CODECS):
    raise WebcamError(f'--output={path} names a file but --source={source} '
                      'is a folder: name a folder for the annotated copies')
  parent = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(parent):
    raise WebcamError(f'--output={path}: folder {parent} does not exist (only '
                      'the output folder itself is created)')
  if not os.access(path if os.path.isdir(path) else parent, os.W_OK):
    raise WebcamError(f'--output={path} is not writable')
  output, images = os.path.realpath(path), os.path.realpath(source)
  if os.path.commonpath([output, images]) == images:
    raise WebcamError(f'--output={path} is inside --source={source}: the '
                      'annotated copies would replace or join its images; '
                      'name a folder outside it')


def open_output(path, source):
  """The Output or FolderOutput for --output `path` and `source` (checked by
  check_output)."""
  if source.kind == 'folder':
    return FolderOutput(path)
  return Output(path, source.size, source.fps)


def temporary_video(path):
  """Where a video for `path` is written until it is complete: beside it,
  hidden, with its extension (OpenCV picks the container by it)."""
  folder, name = os.path.split(path)
  stem, extension = os.path.splitext(name)
  return os.path.join(folder, f'.{stem}.partial{extension}')


class Output:
  """Annotated frames to a video file, or the last one to an image file.

  A video is opened on construction (`size` is (width, height)), so a codec
  this OpenCV lacks fails before the first frame. It is written to
  `temporary_video(path)` and released on leaving `with`, whatever
  happened; `save` renames it to `path` (so a file already there is replaced
  only by a complete, playable video), and leaving `with` on an error
  removes it. An image is written by `save`.
  """

  def __init__(self, path, size, fps):
    self.path = path
    self._last = self._writer = None
    codec = VIDEO_CODECS.get(_extension(path))
    if codec:
      self._temporary = temporary_video(path)
      self._writer = cv2.VideoWriter(self._temporary,
                                     cv2.VideoWriter_fourcc(*codec), fps, size)
      if not self._writer.isOpened():
        self._remove_temporary()
        raise WebcamError(f'--output={path}: OpenCV cannot write {codec} '
                          'video here')

  def _remove_temporary(self):
    with contextlib.suppress(FileNotFoundError):
      os.remove(self._temporary)

  def write(self, frame, name=None):
    """Takes the next frame (`name`, a folder image's, is not used here)."""
    del name
    if self._writer:
      self._writer.write(frame)
    else:
      self._last = frame

  def save(self):
    """Writes the image, or renames the released video into place."""
    if self._writer:
      self._writer.release()
      os.replace(self._temporary, self.path)
    elif self._last is not None and not cv2.imwrite(self.path, self._last):
      raise WebcamError('OpenCV could not write the image')

  def __enter__(self):
    return self

  def __exit__(self, exc_type, *exc_info):
    if self._writer:
      self._writer.release()
      if exc_type is not None:
        self._remove_temporary()


class FolderOutput:
  """Annotated images written as they come, each at its source image's
  relative path under the folder `path` (created on construction: its parent
  exists, check_output_folder). An image that cannot be written is listed
  and the rest go on; `save` reports them."""

  def __init__(self, path):
    os.makedirs(path, exist_ok=True)
    self.path = path
    self.failed = []

  def write(self, frame, name):
    target = os.path.join(self.path, name)
    try:
      os.makedirs(os.path.dirname(target), exist_ok=True)
      written = cv2.imwrite(target, frame)
    except (OSError, cv2.error):
      written = False
    if not written:
      self.failed.append(name)

  def save(self):
    if self.failed:
      raise WebcamError(f'OpenCV could not write {len(self.failed)} of the '
                        f'images, the first {self.failed[0]}')

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    pass


class JsonOutput:
  """A JSON document streamed to `path` record by record, so a long session
  holds one frame in memory, not all of them: `header` (a dict) first, then
  each `write(record)` into the list under `key`, then `save(footer)` closes
  it with the footer's keys and renames the temporary file (`path`.tmp) over
  `path`: the file at `path` is whole or not there. A write that fails (a
  full disk) is kept and raised by `save`; the frames go on for the other
  outputs. Leaving `with` unsaved removes the temporary file.
  """

  def __init__(self, path, header, key):
    self.path, self._temporary = path, f'{path}.tmp'
    self._error, self._count, self._saved = None, 0, False
    self._file = open(self._temporary, 'w', encoding='utf-8')
    self._put(json.dumps(header)[:-1] + (', ' if header else '') +
              f'{json.dumps(key)}: [')

  def _put(self, text):
    if self._error is None:
      try:
        self._file.write(text)
      except OSError as e:
        self._error = e

  def write(self, record):
    # Serialised whole before writing: a record that cannot be serialised
    # raises here and leaves no half of itself in the file.
    text = json.dumps(record)
    self._put((', ' if self._count else '') + text)
    self._count += 1

  def save(self, footer):
    """Closes the list and the document with `footer`'s keys; renames."""
    self._put(']' + ''.join(f', {json.dumps(k)}: {json.dumps(v)}'
                            for k, v in footer.items()) + '}')
    try:
      self._file.close()
      if self._error is not None:
        raise self._error
      os.replace(self._temporary, self.path)
      self._saved = True
    except BaseException:
      self._discard()
      raise

  def _discard(self):
    self._file.close()
    with contextlib.suppress(FileNotFoundError):
      os.remove(self._temporary)

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    if not self._saved:
      self._discard()


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
