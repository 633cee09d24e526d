"""facelandmark/tracking.py and per-face smoothing: pure pieces on a scripted scene,
then the shipped landmarker on moving copies of the bundled photo."""

import os

import cv2
import numpy as np
import pytest

from facelandmark import blazeface
from facelandmark import detectors
from facelandmark import finder as finder_lib
from facelandmark import smoothing
from facelandmark import tracking
from model import landmarker as landmarker_lib
from facelandmark import geometry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTO = os.path.join(REPO, 'assets', 'eileen_collins_nasa.jpg')
HEIGHT, WIDTH = 480, 640
# 68 points whose tight box is the unit square.
TEMPLATE = np.vstack([[0, 0], [1, 1], np.random.default_rng(0).uniform(
    0, 1, (66, 2))])


def _in_box(box):
  """TEMPLATE stretched over `box`: landmarks whose tight box is `box`."""
  box = np.asarray(box, np.float64)
  return box[:2] + TEMPLATE * (box[2:] - box[:2])


def _box(x, y, size=100.0):
  return np.array([x, y, x + size, y + size])


class Scene:
  """A stand-in FaceFinder over scripted face boxes (`faces`, set per
  frame): the detector reports those at least half in the frame (unless
  `missed`), or with `full_frame` the whole frame; the landmarker finds the
  face with most of itself in its box (the one it overlaps most), and on no
  face collapses to the middle third of its box, as the shipped model does
  on background."""

  def __init__(self, *faces, full_frame=False):
    self.faces, self.missed, self.calls = list(faces), False, 0
    self.full_frame = full_frame

  def detect(self, frame):
    del frame
    self.calls += 1
    if self.full_frame:
      boxes = np.array([[0.0, 0.0, WIDTH, HEIGHT]])
    else:
      boxes = np.reshape([b for b in self.faces if not self.missed and
                          tracking.inside_share(b, (HEIGHT, WIDTH)) >= 0.5],
                         (-1, 4))
    return detectors.Detections(boxes.astype(np.float64),
                                np.full(len(boxes), 0.9))

  def landmarks(self, rgb, boxes):
    del rgb
    faces = np.reshape(self.faces, (-1, 4)).astype(np.float64)
    found = []
    for box in boxes:
      low, high = np.maximum(faces[:, :2], box[:2]), np.minimum(faces[:, 2:],
                                                                box[2:])
      inside = np.prod(np.maximum(high - low, 0), axis=1) / np.prod(
          faces[:, 2:] - faces[:, :2], axis=1)
      iou = blazeface.pairwise_iou(faces, np.reshape(box, (1, 4)))[:, 0]
      best = np.argmax(np.where(inside >= 0.5, iou, -1)) if len(faces) else 0
      found.append(_in_box(faces[best]) if len(faces) and inside[best] >= 0.5
                   else _in_box(geometry.square_around(box, 1 / 3)))
    return np.array(found).reshape(-1, 68, 2)


def _frame():
  return np.zeros((HEIGHT, WIDTH, 3), np.uint8)


def _ids(faces):
  return [face.id for face in faces]


# Pure pieces.


def test_looks_lost():
  box, size = _box(100, 100), (HEIGHT, WIDTH)

  def lost(new_box, old_box=box):
    return tracking.looks_lost(old_box, _in_box(new_box), size)

  assert lost(box + 3) is None
  assert lost(geometry.square_around(box, 1.2)) is None
  assert 'resized 0.50' in lost(geometry.square_around(box, 0.5))
  assert 'resized 1.50' in lost(geometry.square_around(box, 1.5))
  assert 'moved 0.60' in lost(box + [60, 0, 60, 0])
  assert lost(_box(570, 100), _box(560, 100)) is None
  assert '0.40 inside' in lost(_box(600, 100), _box(590, 100))


def test_inside_share():
  assert tracking.inside_share(_box(10, 10), (HEIGHT, WIDTH)) == 1
  assert tracking.inside_share(_box(590, 10), (HEIGHT, WIDTH)) == 0.5
  assert tracking.inside_share(_box(-75, -50), (HEIGHT, WIDTH)) == 0.125
  assert tracking.inside_share(_box(700, 10), (HEIGHT, WIDTH)) == 0


def test_associate_pairs_by_iou_one_to_one():
  tracks = np.array([_box(0, 0), _box(300, 0), _box(500, 300)])
  detected = np.array([_box(305, 5), _box(200, 200), _box(2, 2)])
  matches, new = tracking.associate(tracks, detected)
  assert matches.tolist() == [2, 0, -1] and new == [1]
  matches, new = tracking.associate(np.zeros((0, 4)), detected)
  assert matches.tolist() == [] and new == [0, 1, 2]


def test_detect_every_must_be_positive():
  with pytest.raises(ValueError, match='detect_every'):
    tracking.Tracker(Scene(), detect_every=0)


# The tracker on a scripted scene.


@pytest.mark.parametrize('every', [1, 4, 10])
def test_ids_stable_while_a_face_moves_and_detector_every_n_frames(every):
  scene = Scene(_box(100, 100))
  tracker = tracking.Tracker(scene, detect_every=every)
  for k in range(30):
    scene.faces = [_box(100 + 4 * k, 100 + k)]
    (face,) = tracker.step(_frame())
    assert face.id == 0
    np.testing.assert_allclose(geometry.landmark_box(face.landmarks),
                               scene.faces[0])
  assert scene.calls == tracker.detections == -(-30 // every)


def test_a_second_face_gets_a_new_id_when_the_detector_next_runs():
  scene = Scene(_box(100, 100))
  tracker = tracking.Tracker(scene, detect_every=5)
  seen = []
  for k in range(8):
    if k == 3:
      scene.faces.append(_box(400, 200))
    seen.append(_ids(tracker.step(_frame())))
  assert seen == [[0]] * 5 + [[0, 1]] * 3
  assert scene.calls == 2


def test_a_face_that_vanishes_ends_its_track_and_gets_its_id_back():
  scene = Scene(_box(100, 100))
  tracker = tracking.Tracker(scene, detect_every=10)
  assert _ids(tracker.step(_frame())) == [0]
  scene.faces = []
  # Its landmarks collapse: lost, so the detector runs now, finds nothing.
  assert tracker.step(_frame()) == [] and tracker.tracks == []
  assert scene.calls == 2
  # Without tracks it looks on every frame; a face back near where it left
  # is the same face.
  tracker.step(_frame())
  scene.faces = [_box(110, 105)]
  assert _ids(tracker.step(_frame())) == [0] and scene.calls == 4
  # Gone again; back elsewhere, or after RECALL_FRAMES: a new face.
  scene.faces = []
  tracker.step(_frame())
  scene.faces = [_box(400, 300)]
  assert _ids(tracker.step(_frame())) == [1]
  scene.faces = []
  for _ in range(tracking.RECALL_FRAMES + 1):
    tracker.step(_frame())
  scene.faces = [_box(110, 105)]
  assert _ids(tracker.step(_frame())) == [2]


def test_a_face_leaving_the_frame_ends_its_track():
  scene = Scene(_box(400, 100))
  tracker = tracking.Tracker(scene, detect_every=100)
  for x in range(400, 700, 20):
    scene.faces = [_box(x, 100)]
    # Followed while at least half inside (x <= 580); then it looks lost and
    # the detector, which no longer sees it, ends it.
    assert _ids(tracker.step(_frame())) == ([0] if x <= 580 else [])
  assert tracker.tracks == [] and scene.calls == 1 + len(range(600, 700, 20))


def test_a_lost_track_a_detection_overlaps_keeps_its_id():
  scene = Scene(_box(100, 100))
  tracker = tracking.Tracker(scene, detect_every=10)
  tracker.step(_frame())
  scene.faces = [_box(110, 110, 70)]  # Shrinks by 0.7 in one frame.
  (face,) = tracker.step(_frame())
  assert face.id == 0 and scene.calls == 2
  np.testing.assert_allclose(face.box, scene.faces[0])  # From the detection.


def test_a_followed_face_survives_detector_misses():
  scene = Scene(_box(100, 100))
  tracker = tracking.Tracker(scene, detect_every=3)
  assert _ids(tracker.step(_frame())) == [0]
  scene.missed = True
  for k in range(12):  # The detector runs 4 times and never sees it.
    scene.faces = [_box(100 + 2 * k, 100)]
    (face,) = tracker.step(_frame())
    assert face.id == 0
    np.testing.assert_allclose(geometry.landmark_box(face.landmarks),
                               scene.faces[0])
  assert scene.calls == 5
  scene.missed = False
  assert _ids(tracker.step(_frame())) == [0]


@pytest.mark.parametrize('follow', [True, False])
def test_full_frame_boxes_associate_by_the_landmarks_they_produce(follow):
  scene = Scene(_box(100, 100), full_frame=True)
  tracker = tracking.Tracker(scene, detect_every=2, follow=follow)
  for k in range(8):
    scene.faces = [_box(100 + 3 * k, 100)]
    (face,) = tracker.step(_frame())
    assert face.id == 0
    np.testing.assert_allclose(geometry.landmark_box(face.landmarks),
                               scene.faces[0])
  assert scene.calls == (4 if follow else 8)


def test_a_cut_ends_every_track():
  scene = Scene(_box(100, 100))
  tracker = tracking.Tracker(scene, detect_every=10)
  rng = np.random.default_rng(0)
  shot = cv2.resize(cv2.imread(PHOTO), (WIDTH, HEIGHT))
  noisy = lambda image: np.clip(image + rng.normal(0, 3, image.shape), 0,
                                255).astype(np.uint8)
  for _ in range(3):
    assert _ids(tracker.step(noisy(shot))) == [0] and not tracker.cut
  # Another shot, a face at the same place: another face.
  assert _ids(tracker.step(noisy(shot[::-1]))) == [1] and tracker.cut
  assert scene.calls == 2


def test_cuts_tell_shots_apart_not_motion_or_noise():
  rng = np.random.default_rng(0)
  photo = cv2.resize(cv2.imread(PHOTO), (WIDTH, HEIGHT))
  cuts = tracking.Cuts()
  assert not cuts(photo)
  for k in range(1, 10):  # Moving 6 px a frame, with camera noise.
    moved = np.roll(photo, 6 * k, axis=1) + rng.normal(0, 3, photo.shape)
    assert not cuts(np.clip(moved, 0, 255).astype(np.uint8))
  assert cuts(cv2.flip(photo, 0))


def test_without_following_every_frame_is_detected_and_ids_kept():
  scene = Scene(_box(100, 100), _box(400, 100))
  tracker = tracking.Tracker(scene, detect_every=10, follow=False)
  for k in range(6):
    scene.faces = [_box(100 + 5 * k, 100), _box(400 - 5 * k, 100)]
    faces = tracker.step(_frame())
    assert _ids(faces) == [0, 1]
    np.testing.assert_allclose([f.box for f in faces], scene.faces)
  assert scene.calls == 6


def test_smoothing_state_is_per_id():
  smoother = smoothing.FaceSmoother(min_cutoff=1.0, beta=0.0)
  rng = np.random.default_rng(0)
  still = {0: np.full((68, 2), 50.0), 1: np.full((68, 2), 300.0)}

  def faces(ids):
    return [finder_lib.Face(None, 1.0, still[i] + rng.normal(0, 1, (68, 2)),
                            id=i) for i in ids]

  for k in range(30):
    # Listed in either order: each id keeps its own filter.
    for face in smoother(faces([0, 1] if k % 2 else [1, 0]), k / 30):
      assert np.abs(face.landmarks - still[face.id]).max() < 5
  assert set(smoother.filters) == {0, 1}
  smoother(faces([1]), 1.0)  # Face 0's track ended: its filter goes.
  assert set(smoother.filters) == {1}
  still[2] = np.full((68, 2), 80.0)
  (new,) = faces([2])
  (smoothed,) = smoother([new], 1.1)  # A new track starts from its points.
  np.testing.assert_array_equal(smoothed.landmarks, new.landmarks)


# The shipped landmarker on copies of the bundled photo.

CROP = (124, 40, 324, 240)  # x0, y0, x1, y1 of the photo around her face


@pytest.fixture(scope='module')
def photo_scene():
  """(frame maker, the detector's box of the face at its crop's origin,
  the shipped landmarker)."""
  x0, y0, x1, y1 = CROP
  crop = cv2.imread(PHOTO)[y0:y1, x0:x1]

  def frame(*corners):
    """A grey frame with the crop at each (x, y)."""
    canvas = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
    for x, y in corners:
      canvas[y:y + crop.shape[0], x:x + crop.shape[1]] = crop
    return canvas

  (box,) = detectors.make_detector('blazeface')(frame((0, 0))).boxes
  return frame, box, landmarker_lib.Landmarker.load(
      landmarker_lib.SHIPPED_MODEL, num_threads=1)


class PhotoDetector:
  """Reports the face of each crop corner in `corners`; counts calls."""

  def __init__(self, box):
    self.box, self.corners, self.calls = box, [], 0

  def __call__(self, frame):
    del frame
    self.calls += 1
    boxes = np.reshape([self.box + [x, y, x, y] for x, y in self.corners],
                       (-1, 4))
    return detectors.Detections(boxes, np.full(len(boxes), 0.9))


def test_shipped_landmarker_followed_across_moving_copies(photo_scene):
  make_frame, box, landmarker = photo_scene
  detect = PhotoDetector(box)
  tracker = tracking.Tracker(finder_lib.FaceFinder(landmarker, detect),
                             detect_every=10)
  first = None
  for k in range(20):
    detect.corners = [(100 + 3 * k, 100 + k)]
    (face,) = tracker.step(make_frame(*detect.corners))
    first = face.landmarks if first is None else first
    assert face.id == 0
    # The points move with the face (3 px, 1 px a frame), within a pixel.
    moved = np.median(face.landmarks - first, axis=0)
    np.testing.assert_allclose(moved, [3 * k, k], atol=1.0)
  assert detect.calls == 2
  # A second copy appears: found when the detector next runs, a new id.
  detect.corners.append((400, 200))
  for _ in range(10):
    faces = tracker.step(make_frame(*detect.corners))
  assert _ids(faces) == [0, 1] and detect.calls == 3
  # Both leave: on blank frames the landmarks collapse; lost, then ended.
  detect.corners = []
  assert tracker.step(make_frame()) == [] and tracker.tracks == []
  assert detect.calls == 4


# Smoothing that never blends two faces and never lags.

ANOTHER = np.vstack([[0, 0], [1, 1], np.random.default_rng(1).uniform(
    0, 1, (66, 2))])


def _smoothed_run(smoother, frames, scale=1.0):
  """Smoothed points of one face (id 0) for [F, 68, 2] `frames` at 30/s."""
  return np.array([smoother([finder_lib.Face(None, 1.0, points * scale,
                                             id=0)], k / 30)[0].landmarks
                   for k, points in enumerate(frames)])


def test_the_filter_restarts_when_another_face_takes_the_place():
  rng = np.random.default_rng(0)
  box = _box(200, 100, 150)
  first = [_in_box(box) + rng.normal(0, 0.5, (68, 2)) for _ in range(20)]
  other = box[:2] + ANOTHER * (box[2:] - box[:2])
  smoother = smoothing.FaceSmoother()
  out = _smoothed_run(smoother, first + [other, other])
  # The new face's points at once, nothing of the old face's.
  np.testing.assert_array_equal(out[20], other)
  assert smoother.resets == 1
  # Noise alone never restarts it.
  assert smoothing.shape_jump(first[0], first[1]) < smoothing.SHAPE_JUMP / 3


def test_defaults_hold_a_still_face_and_follow_a_step_within_two_frames():
  rng = np.random.default_rng(0)
  face = _in_box(_box(200, 100, 150))
  eyes = np.linalg.norm(face[36] - face[45])  # any fixed length will do
  steps = np.zeros((60, 1, 2))
  steps[30:] = [8.0, 0.0]
  raw = face + steps + rng.normal(0, 0.6, (60, 68, 2))
  out = _smoothed_run(smoothing.FaceSmoother(), raw)

  def jitter(points):
    return np.sqrt(np.mean(np.sum(np.diff(points[5:30], axis=0)**2,
                                  axis=2)) / 2) / eyes

  assert jitter(out) < jitter(raw) / 3
  moved = (out[30:, :, 0] - face[:, 0]).mean(axis=1)
  assert moved[1] >= 0.9 * 8  # 90% of the step by the second frame


def test_smoothing_is_the_same_at_any_resolution():
  rng = np.random.default_rng(0)
  frames = _in_box(_box(100, 100, 80)) + np.cumsum(rng.normal(
      0, 1, (30, 68, 2)), axis=0)
  small = _smoothed_run(smoothing.FaceSmoother(), frames)
  large = _smoothed_run(smoothing.FaceSmoother(), frames, scale=4.0)
  np.testing.assert_allclose(large, 4 * small, rtol=1e-9)


def test_defaults_follow_a_drifting_face_without_lag_or_jitter():
  rng = np.random.default_rng(0)
  face = _in_box(_box(200, 100, 150))
  drift = np.arange(90)[:, None, None] * np.array([0.5, 0.25])
  raw = face + drift + rng.normal(0, 0.6, (90, 68, 2))
  out = _smoothed_run(smoothing.FaceSmoother(), raw)
  still = out - drift
  steps = np.diff(still[30:], axis=0)
  raw_steps = np.diff((raw - drift)[30:], axis=0)
  # Drifting, the noise is still cut to under a third...
  assert np.sqrt(np.mean(steps**2)) < np.sqrt(np.mean(raw_steps**2)) / 3
  # ...and the face is where it is, not behind it (a pixel is 2 frames).
  behind = np.linalg.norm((out - face - drift)[10:].mean(axis=1), axis=1)
  assert behind.max() < 1.0
