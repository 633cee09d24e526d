"""Faces followed from frame to frame, each with a stable id.

A track's box in the next frame is the tight box of its landmarks in this
one: the box the landmarker was trained on (300-W's tight landmark boxes),
and for a face that moved less than 1% of its size the refine loop stops
after its first pass (landmarker.py: `settled`).

The detector runs to find faces: on frames without tracks, every
`detect_every` frames, and on a frame where a track looks lost
(`looks_lost`: its landmark box changed size or place too much in one
frame, or is leaving the frame). The landmarker, not the detector, says
when a face is gone: a followed face the detector misses is kept (BlazeFace
misses faces it saw a frame before, at some positions and poses), and a
track ends only when it looks lost and no detection takes it up.

Detections are paired with tracks by the landmark boxes they produce
(`associate` on IoU), not by their own boxes: a detector's box frames a
face differently from its landmarks (a full-frame box hardly overlaps its
face), so a detection that overlaps no followed face by its own box is
landmarked first. A detection taken up by no track gets the id of a track
that ended within RECALL_FRAMES frames near where it now is, else a new id.

A cut (the whole frame changes: `Cuts`) ends every track, and ids are not
recalled across it: the next shot's faces are new faces.

With `follow=False` every frame's landmarks come from that frame's
detections, and the tracks only carry the ids.
"""

import dataclasses
import itertools

import cv2
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
# A face that comes back within this many frames (2 s at 30 frames/s),
# overlapping where its track ended (RECALL_IOU), gets its old id.
RECALL_FRAMES = 60
RECALL_IOU = 0.3
# A cut: the mean absolute difference of consecutive frames' 32x32 grey
# thumbnails above this many grey levels. Measured on 640x480 clips of the
# bundled photo with camera noise: still 0.1, drifting 0.5, an 8 px step 14,
# the whole frame panning 20 px a frame 30; 39 consecutive AFW photos (cuts)
# 36 or more, median 73. A cut missed here is still caught by the smoother's
# shape test (smoothing.py); a false one costs new ids.
CUT_DIFFERENCE = 32.0
THUMBNAIL = (32, 32)


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


class Cuts:
  """Tells cuts in a stream of BGR frames: `cuts(frame)` is True when
  `frame` is a different shot from the one before (CUT_DIFFERENCE)."""

  def __init__(self, threshold=CUT_DIFFERENCE):
    self.threshold, self._previous = threshold, None
    self.difference = 0.0  # the last frame's, in grey levels

  def __call__(self, frame):
    grey = frame if frame.ndim == 2 else cv2.cvtColor(frame,
                                                      cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, THUMBNAIL,
                       interpolation=cv2.INTER_AREA).astype(np.float32)
    previous, self._previous = self._previous, small
    if previous is None:
      return False
    self.difference = float(np.mean(np.abs(small - previous)))
    return self.difference > self.threshold


@dataclasses.dataclass
class Track:
  id: int
  box: np.ndarray  # where to look in the next frame
  score: float     # the detector's, when it last saw the face
  ended: int = -1  # the frame it ended on (a recallable track)


class Tracker:
  """Faces of a video frame by frame, with ids: `tracker.step(bgr_frame)`.

  Attributes:
    tracks: the faces followed into the next frame, in id order.
    ended: tracks that ended in the last RECALL_FRAMES frames (their box is
      where they were last seen), whose ids a face there takes back.
    detections: how many frames the detector ran on.
    cut: whether the last frame was a cut (Cuts).
  """

  def __init__(self, finder, detect_every=10, follow=True,
               cuts=CUT_DIFFERENCE):
    """`finder`: a finder.py FaceFinder (its `detect` and `landmarks`
    are used); `detect_every`: frames between detector runs while faces are
    followed; `follow`: take each frame's boxes from the last landmarks
    (False: from the detector, every frame); `cuts`: Cuts' threshold (None:
    no cut test)."""
    if detect_every < 1:
      raise ValueError(f'detect_every must be at least 1, got {detect_every}')
    self.finder, self.detect_every, self.follow = finder, detect_every, follow
    self.tracks, self.ended = [], []
    self.detections = 0
    self.cut = False
    self._cuts = None if cuts is None else Cuts(cuts)
    self._ids = itertools.count()
    self._frame = self._last_detection = 0

  def step(self, frame):
    """The faces in BGR uint8 `frame`, in id order: [finder.Face]."""
    rgb = finder_lib.as_rgb(frame, bgr=True)
    self.cut = bool(self._cuts and self._cuts(frame))
    if self.cut:  # A new shot: its faces are new faces.
      self.tracks, self.ended = [], []
    self.ended = [t for t in self.ended
                  if self._frame - t.ended <= RECALL_FRAMES]
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
    faces = self._update(found, frame.shape[:2])
    self._frame += 1
    return faces

  def _detection_due(self, any_lost):
    return (not self.follow or not self.tracks or any_lost or
            self._frame - self._last_detection >= self.detect_every)

  def _detect(self, frame, rgb, found, lost):
    """`found` checked against the detector: followed faces kept whether it
    sees them or not; lost ones taken up by a detection's landmarks (else
    ended); detections no track takes up landmarked as faces, with a
    recalled or new id."""
    detected = self.finder.detect(frame)
    self.detections += 1
    self._last_detection = self._frame
    kept = [f for f, is_lost in zip(found, lost) if not is_lost]
    waiting = [track for (track, _, _), is_lost in zip(found, lost)
               if is_lost]
    # A detection whose own box overlaps a followed face is that face.
    followed = np.reshape([geometry.landmark_box(p) for _, _, p in kept],
                          (-1, 4))
    matches, rest = associate(followed, detected.boxes)
    for (track, _, _), d in zip(kept, matches):
      if d >= 0:
        track.score = float(detected.scores[d])
    # The others, by the landmark boxes they produce: a followed face's
    # (a second box on it), a lost track's, a recently ended one's.
    seeds = detected.boxes[rest].reshape(-1, 4)
    seeded = (self.finder.landmarks(rgb, seeds) if len(seeds) else
              np.zeros((0, geometry.NUM_LANDMARKS, 2)))
    produced = np.reshape([geometry.landmark_box(p) for p in seeded], (-1, 4))
    duplicate, _ = associate(produced, followed)
    fresh = [k for k in range(len(seeds)) if duplicate[k] < 0]
    claimants = waiting + self.ended
    taken, _ = associate(np.reshape([t.box for t in claimants], (-1, 4)),
                         produced[fresh], RECALL_IOU)
    owner = {fresh[d]: track for track, d in zip(claimants, taken) if d >= 0}
    back = {track.id for track in owner.values()}
    self.ended = [t for t in self.ended if t.id not in back]
    for track in waiting:  # Lost, and no detection took it up: ended.
      if track.id not in back:
        track.ended = self._frame
        self.ended.append(track)
    for k in fresh:
      track = owner.get(k) or Track(next(self._ids), None, 0.0)
      track.score = float(detected.scores[rest[k]])
      kept.append((track, seeds[k], seeded[k]))
    return kept

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
      else:
        track.ended = self._frame
        self.ended.append(track)
    return faces
