"""Faces followed from frame to frame, each with a stable id.

A track's box in the next frame is the tight box of its landmarks in this
one: the box the landmarker was trained on (300-W's tight landmark boxes),
and for a face that moved less than 1% of its size the refine loop stops
after its first pass (landmarker.py: `settled`).

The detector runs to find faces: on frames without tracks, every
`detect_every` frames, and on a frame where a track looks lost
(`looks_lost`: its landmark box changed size or place too much in one
frame, or is leaving the frame). When it runs, tracks and detections are
paired by IoU (`associate`): a track no detection overlaps ends; a lost
track that a detection overlaps starts again from the detection's box,
keeping its id; a detection no track overlaps starts a new track.

With `follow=False` every frame's landmarks come from that frame's
detections, and the tracks only carry the ids.
"""

import dataclasses
import itertools

import numpy as np

from facelandmark import detectors
from facelandmark import finder as finder_lib
from facelandmark import geometry

# A followed face's landmark box may change its size by this factor and move
# its centre by this share of its size in one frame. On the shipped model a
# still face's landmark box keeps its size within 1%, while on background, a
# blank frame or a box half off the face the refine passes shrink it to 0.2
# to 0.75 of the box; head pose's reprojection error tells neither apart (3 to
# 5% of the box on faces and non-faces alike: the net draws a face anywhere).
MAX_RESIZE = 1.25
MAX_JUMP = 0.5
# A face with less of its landmark box than this inside the frame may be
# leaving it: the detector decides. (The shipped model keeps its points in the
# frame and shrinks them as a face leaves, so this rarely comes first.)
MIN_INSIDE = 0.5


def box_sizes(boxes):
  """sqrt(width * height) of [..., 4] boxes."""
  boxes = np.asarray(boxes, np.float64)
  return np.sqrt(np.prod(boxes[..., 2:] - boxes[..., :2], axis=-1))


def looks_lost(box, landmarks, image_size, max_resize=MAX_RESIZE,
               max_jump=MAX_JUMP, min_inside=MIN_INSIDE):
  """Why `landmarks` [68, 2], found in `box` [4] of an image of (height,
  width), may not be the face that was there, or None: their tight box is
  over `max_resize` times larger or smaller than `box`, its centre moved over
  `max_jump` box sizes, or less than `min_inside` of it is in the image."""
  new = geometry.landmark_box(landmarks)
  size = box_sizes(box)
  resize = box_sizes(new) / size
  if not 1 / max_resize <= resize <= max_resize:
    return f'landmark box resized {resize:.2f} times'
  jump = np.linalg.norm((new[:2] + new[2:] - box[:2] - box[2:]) / 2) / size
  if jump > max_jump:
    return f'landmark box moved {jump:.2f} box sizes'
  inside = inside_share(new, image_size)
  if inside < min_inside:
    return f'landmark box {inside:.2f} inside the image'
  return None


def inside_share(box, image_size):
  """The share of `box`'s area inside an image of (height, width)."""
  height, width = image_size
  x0, y0 = np.maximum(box[:2], 0)
  x1, y1 = np.minimum(box[2:], [width, height])
  inside = max(x1 - x0, 0) * max(y1 - y0, 0)
  return inside / max(box_sizes(box)**2, 1e-12)


def associate(track_boxes, detected_boxes, min_iou=detectors.MATCH_IOU):
  """(index into `detected_boxes` of each track box or -1, indices of the
  detections no track took); one to one, best IoU first."""
  matches = detectors.match(detected_boxes, track_boxes, min_iou)
  new = sorted(set(range(len(detected_boxes))) - set(matches.tolist()))
  return matches, new


@dataclasses.dataclass
class Track:
  id: int
  box: np.ndarray  # where to look in the next frame
  score: float     # the detector's, when it last saw the face


class Tracker:
  """Faces of a video frame by frame, with ids: `tracker.step(bgr_frame)`.

  Attributes:
    tracks: the faces followed into the next frame, in id order.
    detections: how many frames the detector ran on.
  """

  def __init__(self, finder, detect_every=10, follow=True):
    """`finder`: a finder.py FaceFinder (its `detect` and `landmarks`
    are used); `detect_every`: frames between detector runs while faces are
    followed; `follow`: take each frame's boxes from the last landmarks
    (False: from the detector, every frame)."""
    if detect_every < 1:
      raise ValueError(f'detect_every must be at least 1, got {detect_every}')
    self.finder, self.detect_every, self.follow = finder, detect_every, follow
    self.tracks = []
    self.detections = 0
    self._ids = itertools.count()
    self._frame = self._last_detection = 0

  def step(self, frame):
    """The faces in BGR uint8 `frame`, in id order: [finder.Face]."""
    rgb = finder_lib.as_rgb(frame, bgr=True)
    boxes = np.array([track.box for track in self.tracks]).reshape(-1, 4)
    if self.follow and self.tracks:
      landmarks = self.finder.landmarks(rgb, boxes)
      lost = [looks_lost(b, p, frame.shape[:2]) is not None
              for b, p in zip(boxes, landmarks)]
    else:
      landmarks, lost = [None] * len(boxes), [True] * len(boxes)
    # (track, the box its landmarks come from, the landmarks)
    found = list(zip(self.tracks, boxes, landmarks))
    if self._detection_due(any(lost)):
      found = self._detect(frame, rgb, found, lost)
    self._frame += 1
    return self._update(found, frame.shape[:2])

  def _detection_due(self, any_lost):
    return (not self.follow or not self.tracks or any_lost or
            self._frame - self._last_detection >= self.detect_every)

  def _detect(self, frame, rgb, found, lost):
    """`found` checked against the detector: matched followed faces kept,
    matched lost ones and new faces landmarked on their detection boxes."""
    detected = self.finder.detect(frame)
    self.detections += 1
    self._last_detection = self._frame
    # A followed face is where its new landmarks are; a lost one was last
    # seen where it was looked for.
    where = [box if is_lost else geometry.landmark_box(points)
             for (_, box, points), is_lost in zip(found, lost)]
    matches, new = associate(np.reshape(where, (-1, 4)), detected.boxes)
    kept, seeds = [], []
    for (track, box, points), d, is_lost in zip(found, matches, lost):
      if d < 0:
        continue
      track.score = float(detected.scores[d])
      if is_lost:
        seeds.append((track, d))
      else:
        kept.append((track, box, points))
    seeds += [(Track(next(self._ids), None, float(detected.scores[d])), d)
              for d in new]
    seed_boxes = detected.boxes[[d for _, d in seeds]].reshape(-1, 4)
    seeded = self.finder.landmarks(rgb, seed_boxes) if seeds else []
    return kept + [(track, box, points) for (track, _), box, points
                   in zip(seeds, seed_boxes, seeded)]

  def _update(self, found, image_size):
    """Faces of `found`; tracks moved to their landmark boxes."""
    faces, self.tracks = [], []
    for track, box, points in sorted(found, key=lambda f: f[0].id):
      faces.append(finder_lib.Face(box, track.score, points, id=track.id))
      track.box = geometry.landmark_box(points)
      # A box wholly outside the frame cannot be looked in (and the
      # Landmarker refuses it).
      if inside_share(track.box, image_size) > 0:
        self.tracks.append(track)
    return faces
