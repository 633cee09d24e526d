"""One call from a photo to its faces: detector, landmarks, head pose.

  finder = FaceFinder.load()               # shipped model, BlazeFace
  faces = finder.find(rgb_image)           # [Face], left to right
  faces = finder.find(bgr_frame, bgr=True, pose=True)
  json.dumps([face.as_dict() for face in faces])

Images of any size are taken as `landmarker.as_rgb_uint8` takes them: RGB (or
BGR with `bgr=True`) uint8, grey, RGBA (BGRA), uint16 and float in [0, 1].
Boxes and landmarks are in corner coordinates: pixel (i, j) covers
[i, i+1) x [j, j+1) (pipeline/geometry.py).
"""

import dataclasses
from typing import Optional

import numpy as np

from live import detectors
from model import head_pose
from model import landmarker as landmarker_lib


@dataclasses.dataclass(frozen=True, eq=False)
class Face:
  """One face in one image.

  Attributes:
    box: [4] [x0, y0, x1, y1], the box its landmarks were found in: the
      detector's, or on video a track's (live/tracking.py).
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


def as_rgb(image, bgr=False):
  """uint8 RGB [H, W, 3] of any image landmarker.as_rgb_uint8 takes; `bgr`:
  its channels are BGR (BGRA), as OpenCV reads them."""
  rgb = landmarker_lib.as_rgb_uint8(image)
  return np.ascontiguousarray(rgb[..., ::-1]) if bgr else rgb


class FaceFinder:
  """A face detector and a Landmarker: photo in, faces out.

  Attributes:
    landmarker: the model/landmarker.py Landmarker.
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
  def load(cls, model=landmarker_lib.SHIPPED_MODEL,
           detector=detectors.DEFAULT_DETECTOR, num_threads=None,
           refine=False):
    """`model` as Landmarker.load takes it; `detector` one of
    detectors.DETECTORS; `num_threads` for both TF Lite interpreters."""
    return cls(landmarker_lib.Landmarker.load(model, num_threads),
               detectors.make_detector(detector, num_threads), refine)

  @property
  def model_file(self):
    return self.landmarker.source

  def detect(self, bgr):
    """Detections in a BGR uint8 [H, W, 3] frame, left to right."""
    return detectors.left_to_right(self._detect(bgr))

  def landmarks(self, rgb, boxes):
    """[K, 68, 2] landmarks of the faces in `boxes` [K, 4] of `rgb`."""
    return self.landmarker.predict(rgb, boxes, refine=self.refine)

  def find(self, image, bgr=False, pose=False):
    """The faces in `image` (RGB; BGR if `bgr`), left to right: [Face].

    `pose`: with their head poses (model/head_pose.py). Raises ValueError
    for an image as_rgb_uint8 does not take.
    """
    rgb = as_rgb(image, bgr)
    detections = self.detect(np.ascontiguousarray(rgb[..., ::-1]))
    faces = [Face(box, float(score), points) for box, score, points in zip(
        detections.boxes, detections.scores,
        self.landmarks(rgb, detections.boxes))]
    return with_poses(faces, rgb.shape[:2]) if pose else faces
