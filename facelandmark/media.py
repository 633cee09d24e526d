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
import tqdm

from facelandmark.errors import WebcamError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg',
                    '.mpeg', '.wmv')
VIDEO_CODECS = {'.mp4': 'mp4v', '.avi': 'MJPG'}  # The videos we write.
WINDOW = 'facelandmark (q or Esc quits)'
FALLBACK_FPS = 30.0  # For video files that do not say their frame rate.
SOURCES_ACCEPTED = (f'pass an image ({", ".join(IMAGE_EXTENSIONS)}), a folder '
                    f'of images, a video file ({", ".join(VIDEO_EXTENSIONS)}) '
                    'or a camera index (0, 1, ...)')


def _extension(path):
  return os.path.splitext(path)[1].lower()


def source_kind(source):
  """'camera', 'folder', 'image' or 'video' for --source; else says what is
  accepted."""
  if source.isdigit():
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


def read_image(path):
  """The BGR uint8 image in file `path`; FileNotFoundError or ValueError
  naming it. (cv2.imread returns None for both, which np.asarray would turn
  into a shapeless array.)"""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such image file')
  image = cv2.imread(path)
  if image is None:
    raise ValueError(f'{path}: OpenCV cannot read this image (not an image, '
                     'damaged, or in a format this OpenCV lacks)')
  return image


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
  A folder image OpenCV cannot read is skipped, named to `warn` and listed in
  `skipped`. Once a video or camera runs out of frames on its own, `stopped`
  says why if it ended early: a camera read failing, or a video giving fewer
  frames than it declares (truncated or damaged). With `progress`, iterating
  a folder or a video file shows a progress bar (tqdm, on stderr).

  Attributes:
    name: --source.
    kind: 'camera', 'folder', 'image' or 'video'.
    size: (width, height) of the first frame (None for a folder).
    fps: the video's frame rate (FALLBACK_FPS if it does not say).
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
    if self.kind == 'image':
      self._first = cv2.imread(source)
      if self._first is None:
        raise WebcamError(f'--source={source}: OpenCV cannot read this image')
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
    height, width = self._first.shape[:2]
    self.size = (width, height)

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
        frame, index = self._read(), index + 1
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
        frame = cv2.imread(os.path.join(self.name, name))
        if frame is None:
          self.skipped.append(name)
          self._warn(f'skipped {os.path.join(self.name, name)}: OpenCV '
                     'cannot read this image')
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

  def write(self, frame, name=None):
    """Takes the next frame (`name`, a folder image's, is not used here)."""
    del name
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
