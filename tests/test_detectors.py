"""BlazeFace's numpy post-processing, letterbox and detections; the detectors'
common interface and box statistics. Real faces: the bundled NASA photo."""

import os
import tracemalloc

import cv2
import numpy as np
import pytest

from facelandmark import blazeface
from facelandmark import detectors
from facelandmark.errors import WebcamError
from model import landmarker as landmarker_lib
from facelandmark import geometry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTO = os.path.join(REPO, 'assets', 'eileen_collins_nasa.jpg')  # 512 x 512
PRETRAINED = os.path.join(REPO, 'pretrained')
GREY = 128


@pytest.fixture(scope='module')
def photo():
  """The photo, RGB."""
  return cv2.cvtColor(cv2.imread(PHOTO), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope='module')
def models():
  return {name: blazeface.BlazeFace(name) for name in blazeface.MODELS}


@pytest.fixture(scope='module')
def reference(photo, models):
  """{model: the face's box on the photo alone}."""
  boxes = {}
  for name, model in models.items():
    faces = model.detect(photo)
    assert len(faces.boxes) == 1, name
    boxes[name] = faces.boxes[0]
  return boxes


def _canvas(photo, height, width, places):
  """A grey canvas with the photo resized to `side` at each (x, y, side)."""
  canvas = np.full((height, width, 3), GREY, np.uint8)
  for x, y, side in places:
    canvas[y:y + side, x:x + side] = cv2.resize(photo, (side, side))
  return canvas


def _size(box):
  return np.sqrt(np.prod(box[2:] - box[:2]))


# Post-processing.


def test_anchors_match_mediapipe_counts_and_centres():
  short = blazeface.ssd_anchors(128, (8, 16, 16, 16), 1.0)
  full = blazeface.ssd_anchors(192, (4,), 0.0)
  assert short.shape == (896, 2) and full.shape == (2304, 2)
  # Short: 16 x 16 cells with 2 anchors, then 8 x 8 cells with 3 x 2.
  np.testing.assert_allclose(short[0], [0.5 / 16, 0.5 / 16])
  np.testing.assert_allclose(short[1], short[0])
  np.testing.assert_allclose(short[2], [1.5 / 16, 0.5 / 16])  # x first
  np.testing.assert_allclose(short[512], [0.5 / 8, 0.5 / 8])
  np.testing.assert_allclose(short[517], short[512])
  np.testing.assert_allclose(short[518], [1.5 / 8, 0.5 / 8])
  np.testing.assert_allclose(short[-1], [7.5 / 8, 7.5 / 8])
  np.testing.assert_allclose(full[0], [0.5 / 48, 0.5 / 48])
  np.testing.assert_allclose(full[48], [0.5 / 48, 1.5 / 48])
  np.testing.assert_allclose(full[-1], [47.5 / 48, 47.5 / 48])


def test_decode_hand_made_tensor():
  anchors = np.array([[0.5, 0.5], [0.25, 0.75]])
  raw = np.zeros((2, 16))
  # x, y, w, h of the box, then (x, y) of six keypoints, in input pixels.
  raw[0, :4] = [12.8, -6.4, 25.6, 51.2]
  raw[0, 4:6] = [0, 12.8]
  raw[1, :4] = [0, 0, 64, 32]
  raw[1, 14:16] = [-32, 32]
  boxes, keypoints = blazeface.decode(raw, anchors, 128)
  np.testing.assert_allclose(boxes, [[0.5, 0.25, 0.7, 0.65],
                                     [0.0, 0.625, 0.5, 0.875]])
  assert keypoints.shape == (2, 6, 2)
  np.testing.assert_allclose(keypoints[0, 0], [0.5, 0.6])
  np.testing.assert_allclose(keypoints[0, 1:], np.full((5, 2), 0.5))
  np.testing.assert_allclose(keypoints[1, 5], [0.0, 1.0])
  scores = blazeface.sigmoid_scores([[0.0], [2.0], [500.0], [-500.0]])
  np.testing.assert_allclose(scores, [0.5, 1 / (1 + np.exp(-2)),
                                      1 / (1 + np.exp(-100)),
                                      1 / (1 + np.exp(100))])


def test_weighted_nms_merges_overlapping_boxes():
  boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 0, 30, 10],
                    [5, 0, 15, 10]], np.float64)
  scores = np.array([0.9, 0.6, 0.7, 0.8])
  keypoints = np.stack([boxes[:, :2]] * 6, axis=1)
  merged, kept, points = blazeface.weighted_nms(boxes, scores, keypoints)
  # Box 0 takes boxes 1 (IoU 0.68) and 3 (IoU 1/3); box 2 overlaps nothing.
  weights = np.array([0.9, 0.6, 0.8]) / 2.3
  expected = weights @ boxes[[0, 1, 3]]
  np.testing.assert_allclose(merged, [expected, boxes[2]])
  np.testing.assert_allclose(kept, [0.9, 0.7])
  np.testing.assert_allclose(points[0], np.tile(expected[:2], (6, 1)))
  # Just under the threshold: both stay, best first.
  apart = np.array([[0, 0, 10, 10], [6, 0, 16, 10]], np.float64)
  assert blazeface.pairwise_iou(apart[:1], apart[1:])[0, 0] < 0.3
  merged, kept, _ = blazeface.weighted_nms(apart, np.array([0.5, 0.9]),
                                           np.zeros((2, 6, 2)))
  np.testing.assert_allclose(merged, apart[::-1])
  np.testing.assert_allclose(kept, [0.9, 0.5])
  merged, kept, points = blazeface.weighted_nms(
      np.zeros((0, 4)), np.zeros(0), np.zeros((0, 6, 2)))
  assert merged.shape == (0, 4) and kept.shape == (0,)
  assert points.shape == (0, 6, 2)


@pytest.mark.parametrize('height,width', [(512, 512), (480, 640),
                                          (640, 480), (6000, 8000),
                                          (3, 1000)])
def test_letterbox_round_trip(height, width):
  box = blazeface.letterbox(height, width, 128)
  (x0, y0), (w, h) = box.offset, box.size
  assert max(w, h) == 128 and 0 <= x0 and x0 + w <= 128 and y0 + h <= 128
  corners = box.to_input([[0, 0], [width, height]])
  np.testing.assert_allclose(corners, [[x0, y0], [x0 + w, y0 + h]])
  # Centred: at most one input pixel of the padding more after than before.
  assert 0 <= (128 - w) - 2 * x0 <= 1 and 0 <= (128 - h) - 2 * y0 <= 1
  face = np.array([[0.3 * width, 0.2 * height], [0.6 * width, 0.7 * height]])
  np.testing.assert_allclose(box.to_image(box.to_input(face)), face)


# Detections on the photo.


def test_finds_the_face_on_the_photo(photo, models, reference):
  landmarker = landmarker_lib.Landmarker.load(PRETRAINED)
  for name, model in models.items():
    faces = model.detect(photo)
    points = landmarker.predict(photo, faces.boxes, refine=True)[0]
    truth = geometry.landmark_box(points)
    assert blazeface.pairwise_iou(faces.boxes, truth[None])[0, 0] > 0.5, name
    assert model.min_score <= faces.scores[0] <= 1
    # Right and left are the person's: the right eye is on the image's left.
    eyes_nose_mouth = [points[36:42].mean(0), points[42:48].mean(0),
                       points[30], points[[62, 66]].mean(0)]
    error = np.linalg.norm(faces.keypoints[0, :4] - eyes_nose_mouth, axis=1)
    assert np.all(error < 0.1 * _size(truth)), (name, error)


def test_bgr_flag_reads_opencv_frames(photo, models, reference):
  faces = models['short'].detect(photo[..., ::-1], bgr=True)
  np.testing.assert_allclose(faces.boxes[0], reference['short'])


# The short model misses faces under roughly a seventh of the image's longer
# side, the full one under a fifteenth: the face here (95 px) stays above.
@pytest.mark.parametrize('name,height,width,x,y', [
    ('short', 512, 640, 100, 0), ('short', 640, 512, 0, 100),
    ('full', 512, 1600, 900, 0), ('full', 1600, 512, 0, 900)])
def test_padded_photo_gives_the_face_in_place(photo, models, reference, name,
                                              height, width, x, y):
  faces = models[name].detect(_canvas(photo, height, width, [(x, y, 512)]))
  assert len(faces.boxes) == 1
  expected = reference[name] + [x, y, x, y]
  assert np.abs(faces.boxes[0] - expected).max() < 0.15 * _size(expected)


def test_two_copies_give_two_faces(photo, models, reference):
  faces = models['full'].detect(_canvas(photo, 512, 1024,
                                        [(0, 0, 512), (512, 0, 512)]))
  assert len(faces.boxes) == 2
  left, right = faces.boxes[np.argsort(faces.boxes[:, 0])]
  size = _size(reference['full'])
  assert np.abs(left - reference['full']).max() < 0.15 * size
  assert np.abs(right - reference['full'] - [512, 0, 512, 0]).max() < (
      0.15 * size)
  assert np.all(np.diff(faces.scores) <= 0)  # Best first.


def test_min_face_drops_small_faces(photo):
  # Faces of about 0.17 and 0.11 of the 600 px side.
  canvas = _canvas(photo, 600, 900, [(0, 0, 512), (512, 100, 384)])
  found = {share: blazeface.BlazeFace('full', min_face=share).detect(
      canvas).boxes for share in (0.0, 0.14, 0.2)}
  assert [len(boxes) for boxes in found.values()] == [2, 1, 0]
  assert found[0.14][0, 2] < 512  # The big face is the one kept.
  with pytest.raises(ValueError, match='min_face'):
    blazeface.BlazeFace('short', min_face=1.5)
  with pytest.raises(ValueError, match="'short', 'full'"):
    blazeface.BlazeFace('long')


def test_grey_rgba_and_other_dtypes(photo, models, reference):
  model, expected = models['short'], reference['short']
  size = _size(expected)
  grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
  rgba = np.dstack([photo, np.full(photo.shape[:2], 7, np.uint8)])
  for image in (grey, grey[..., None], rgba, photo / 255.0,
                photo.astype(np.uint16) * 257, photo.astype(np.float16) / 255):
    faces = model.detect(image)
    assert len(faces.boxes) == 1, (image.dtype, image.shape)
    assert np.abs(faces.boxes[0] - expected).max() < 0.1 * size
  np.testing.assert_allclose(model.detect(rgba).boxes[0], expected)
  with pytest.raises(ValueError, match='channels'):
    model.detect(photo[..., :2])
  with pytest.raises(ValueError, match='empty'):
    model.detect(np.zeros((0, 10, 3), np.uint8))
  with pytest.raises(ValueError, match='in \\[0, 1\\]'):
    model.detect(photo.astype(np.float16))


def test_huge_image_is_shrunk_first(photo, models, reference):
  """8000 x 6000 with the photo enlarged 8x: found, without full-size copies
  (tracemalloc sees numpy's allocations)."""
  side, x, y = 4096, 3500, 1500
  canvas = _canvas(photo, 6000, 8000, [(x, y, side)])
  tracemalloc.start()
  try:
    faces = models['full'].detect(canvas)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert peak < 16e6 < canvas.nbytes
  assert len(faces.boxes) == 1
  expected = reference['full'] * (side / 512) + [x, y, x, y]
  assert np.abs(faces.boxes[0] - expected).max() < 0.15 * _size(expected)


# The detectors' interface.


def test_detectors_return_boxes_and_scores(photo):
  assert detectors.DETECTORS[0] == detectors.DEFAULT_DETECTOR == 'auto'
  frame = np.ascontiguousarray(photo[..., ::-1])
  for name in ('blazeface', 'blazeface_full', 'blazeface_both', 'full_frame'):
    found = detectors.make_detector(name, num_threads=1)(frame)
    assert isinstance(found, detectors.Detections)
    assert found.boxes.shape == (1, 4) and found.scores.shape == (1,), name
  boxes, scores = detectors.full_frame_detector(frame)
  np.testing.assert_array_equal(boxes, [[0, 0, 512, 512]])
  np.testing.assert_array_equal(scores, [1])
  with pytest.raises(WebcamError, match='--detector'):
    detectors.make_detector('dlib')


def test_left_to_right_keeps_scores_with_boxes():
  found = detectors.Detections(np.array([[50, 0, 60, 10], [0, 0, 10, 10.0]]),
                               np.array([0.9, 0.6]))
  boxes, scores = detectors.left_to_right(found)
  np.testing.assert_array_equal(boxes[:, 0], [0, 50])
  np.testing.assert_array_equal(scores, [0.6, 0.9])


def test_match_is_one_to_one_by_iou():
  annotated = np.array([[0, 0, 10, 10], [100, 0, 110, 10], [200, 0, 210, 10.]])
  detected = np.array([[101, 0, 111, 10], [1, 0, 11, 10], [0, 0, 10, 10],
                       [300, 0, 310, 10.]])
  np.testing.assert_array_equal(detectors.match(detected, annotated),
                                [2, 0, -1])
  np.testing.assert_array_equal(detectors.match(np.zeros((0, 4)), annotated),
                                [-1, -1, -1])
  # IoU 0.25 is no match at the default 0.3.
  assert detectors.match([[0, 0, 10, 10]], [[0, 0, 20, 20]])[0] == -1


def test_box_statistics():
  truth = np.array([[0, 0, 100, 100], [50, 50, 250, 450.]])
  # 10% right and up of size 100, twice as wide; same centre, half as tall.
  detected = np.array([[-40, -30, 160, 110], [50, 150, 250, 350.]])
  offsets = detectors.box_offsets(detected, truth)
  np.testing.assert_allclose(offsets, [[0.1, -0.1, np.log(2), np.log(1.4)],
                                       [0, 0, 0, np.log(0.5)]])
  stats = detectors.box_statistics(detected, truth)
  assert set(stats) == set(detectors.BOX_STATISTICS)
  np.testing.assert_allclose(stats['x'], [0.05, 0.05])
  np.testing.assert_allclose(stats['log_h'], [
      np.mean([np.log(1.4), np.log(0.5)]),
      np.std([np.log(1.4), np.log(0.5)])])
  assert np.isnan(detectors.box_statistics(np.zeros((0, 4)),
                                           np.zeros((0, 4)))['y'][0])


# Crowds: the photo default.


def _boxes(*boxes):
  boxes = np.array(boxes, np.float64).reshape(-1, 4)
  return detectors.Detections(boxes, np.full(len(boxes), 0.9))


def test_combine_keeps_full_range_and_the_large_faces_it_missed():
  full = _boxes([100, 100, 140, 140], [150, 100, 190, 140])
  short = _boxes(
      [95, 95, 195, 145],     # one box over the two neighbours: dropped
      [102, 101, 141, 142],   # a face full range has: dropped
      [400, 100, 700, 400],   # a large face full range missed: kept
      [300, 300, 360, 360])   # small (60 < 0.25 * 480): full range's domain
  boxes, scores = detectors.combine(short, full, image_side=480)
  np.testing.assert_array_equal(boxes, [[100, 100, 140, 140],
                                        [150, 100, 190, 140],
                                        [400, 100, 700, 400]])
  assert scores.shape == (3,)


@pytest.mark.parametrize('kind, detector', [
    ('image', 'blazeface_both'), ('folder', 'blazeface_both'),
    ('video', 'blazeface'), ('camera', 'blazeface')])
def test_auto_picks_by_source(kind, detector):
  assert detectors.for_source('auto', kind) == detector
  assert detectors.for_source('haar', kind) == 'haar'

