"""One call from a photo to its faces: detector, landmarks, head pose.

  finder = FaceFinder.load()               # shipped model, BlazeFace
  faces = finder.find('photo.jpg')         # [Face], left to right
  faces = finder.find(bgr_frame, bgr=True, pose=True)
  for path, faces in finder.find_all('photos/'):  # or a list of images
    ...
  json.dumps([face.as_dict() for face in faces])

An image is a file path, a PIL image or an array, of any size; arrays are
taken as `landmarker.as_rgb_uint8` takes them: RGB (or BGR with `bgr=True`)
uint8, grey, RGBA (BGRA), uint16 and float in [0, 1]. One FaceFinder may be
called from several threads at once (tflite.py).
Boxes and landmarks are in corner coordinates: pixel (i, j) covers
[i, i+1) x [j, j+1) (geometry.py).
"""

import dataclasses
import os
from typing import Any, Iterable, Iterator, Optional, Union

import numpy as np

from facelandmark import detectors
from facelandmark import head_pose
from facelandmark import landmarker as landmarker_lib
from facelandmark import media
from facelandmark import tflite

# What find() takes: a file path, a PIL image, or an array.
Image = Union[str, os.PathLike, np.ndarray, Any]


@dataclasses.dataclass(frozen=True, eq=False)
class Face:
  """One face in one image.

  Attributes:
    box: [4] [x0, y0, x1, y1], the box its landmarks were found in: the
      detector's, or on video a track's (tracking.py).
    score: the detector's confidence when it last saw the face (1 for
      detectors without one).
    landmarks: [68, 2] iBUG points.
    pose: its HeadPose, when asked for.
    id: its track's id, on video and camera; None on photos.
  """
  box: np.ndarray
  score: float
  landmarks: np.ndarray
  pose: Optional[head_pose.HeadPose] = None
  id: Optional[int] = None

  def as_dict(self):
    """JSON-ready: pixels to 0.001, the score to 0.0001; 'id' and 'pose'
    only when set."""
    record = {} if self.id is None else {'id': self.id}
    record.update(box=np.round(self.box, 3).tolist(),
                  score=round(float(self.score), 4),
                  landmarks=np.round(self.landmarks, 3).tolist())
    if self.pose is not None:
      record['pose'] = self.pose.as_dict()
    return record


def with_poses(faces, image_size):
  """`faces` with their head poses, on an image of (height, width)."""
  return [dataclasses.replace(face,
                              pose=head_pose.estimate(face.landmarks,
                                                      image_size))
          for face in faces]


def as_rgb(image: Image, bgr: bool = False) -> np.ndarray:
  """uint8 RGB [H, W, 3] of `image`: a file path (read by OpenCV), a PIL
  image, or any array landmarker.as_rgb_uint8 takes; `bgr`: the array's
  channels are BGR (BGRA), as OpenCV reads them.

  Raises FileNotFoundError or ValueError naming a file that is missing or
  unreadable, ValueError for an image it does not take.
  """
  if isinstance(image, (str, os.PathLike)):
    if bgr:
      raise ValueError(f'bgr=True is for arrays; {image} is a file path')
    return np.ascontiguousarray(media.read_image(os.fspath(image))[..., ::-1])
  # PIL images, told apart without importing PIL (not a dependency).
  if hasattr(image, 'convert') and hasattr(image, 'mode'):
    if bgr:
      raise ValueError('bgr=True is for arrays; a PIL image is RGB')
    return np.asarray(image.convert('RGB'))
  rgb = landmarker_lib.as_rgb_uint8(image)
  return np.ascontiguousarray(rgb[..., ::-1]) if bgr else rgb


def check_input_size(landmarker):
  """Raises ValueError naming the files if the .tflite file the landmarker
  loaded (its metadata's 'path') does not take square views of its
  metadata's `input_size`."""
  path = landmarker.metadata.get('path')
  if not path or not str(path).endswith('.tflite'):
    return
  (source,) = tflite.Model(path).inputs
  side = [int(v) for v in source['shape'][1:3]]
  if side != [landmarker.input_size] * 2:
    metadata = os.path.join(os.path.dirname(path), landmarker_lib.METADATA)
    raise ValueError(
        f'{metadata}: input_size {landmarker.input_size} does not match '
        f'{path}, which takes {side[0]}x{side[1]} views: use the '
        f'{landmarker_lib.METADATA} export.py wrote with it')


class FaceFinder:
  """A face detector and a Landmarker: photo in, faces out.

  Attributes:
    landmarker: the landmarker.py Landmarker.
    refine: Landmarker.predict's: rerun on the landmarks' box until it
      settles.
    model_file: the model file it runs (Landmarker.source).
  """

  def __init__(self, landmarker, detect, refine=False):
    """`detect`: BGR uint8 frame -> detectors.Detections."""
    self.landmarker = landmarker
    self.refine = refine
    self._detect = detect

  @classmethod
  def load(cls, model: str = landmarker_lib.SHIPPED_MODEL,
           detector: str = detectors.PHOTO_DETECTOR,
           num_threads: Optional[int] = None,
           refine: bool = False) -> 'FaceFinder':
    """`model` as Landmarker.load takes it (default: the shipped model);
    `detector` one of detectors.DETECTORS; `num_threads` for both TF Lite
    interpreters (1 or more; None: TF Lite's choice).

    Raises ValueError for a `num_threads` below 1 and for a model whose
    metadata.json gives an input size its .tflite file does not take (found
    here, not at the first face)."""
    if num_threads is not None and num_threads < 1:
      raise ValueError(f'num_threads must be at least 1, got {num_threads}')
    landmarker = landmarker_lib.Landmarker.load(model, num_threads)
    check_input_size(landmarker)
    return cls(landmarker, detectors.make_detector(detector, num_threads),
               refine)

  @property
  def model_file(self):
    return self.landmarker.source

  def detect(self, bgr):
    """Detections in a BGR uint8 [H, W, 3] frame, left to right."""
    return detectors.left_to_right(self._detect(bgr))

  def landmarks(self, rgb, boxes):
    """[K, 68, 2] landmarks of the faces in `boxes` [K, 4] of `rgb`."""
    return self.landmarker.predict(rgb, boxes, refine=self.refine)

  def find(self, image: Image, bgr: bool = False,
           pose: bool = False) -> list[Face]:
    """The faces in `image` (a path, a PIL image, or an RGB array; BGR if
    `bgr`), left to right: [Face].

    `pose`: with their head poses (head_pose.py). Raises what as_rgb
    raises: a missing or unreadable file or an unusable image, named.
    """
    rgb = as_rgb(image, bgr)
    detections = self.detect(np.ascontiguousarray(rgb[..., ::-1]))
    faces = [Face(box, float(score), points) for box, score, points in zip(
        detections.boxes, detections.scores,
        self.landmarks(rgb, detections.boxes))]
    return with_poses(faces, rgb.shape[:2]) if pose else faces

  def find_all(self, images: Union[str, os.PathLike, Iterable[Image]],
               pose: bool = False) -> Iterator[tuple[Any, list[Face]]]:
    """(image, its faces) for each of `images`, lazily: a folder (every image
    in it and its subfolders, as '/'-separated paths relative to it, sorted)
    or an iterable of what find() takes (each given back as it came).

    A file that is missing or unreadable raises, naming it, when reached.
    """
    if isinstance(images, (str, os.PathLike)):
      folder = os.fspath(images)
      if not os.path.isdir(folder):
        raise NotADirectoryError(f'{folder} is not a folder: find_all takes '
                                 'a folder or a list of images')
      for name in media.image_files(folder):
        yield name, self.find(os.path.join(folder, name), pose=pose)
      return
    for image in images:
      yield image, self.find(image, pose=pose)
