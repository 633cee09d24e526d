"""facelandmark/finder.py: photo to faces with the shipped model, on the bundled
public-domain photo."""

import json
import os

import cv2
import numpy as np
import pytest

from facelandmark import finder as finder_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTO = os.path.join(REPO, 'assets', 'eileen_collins_nasa.jpg')


@pytest.fixture(scope='module')
def finder():
  return finder_lib.FaceFinder.load(num_threads=1)


@pytest.fixture(scope='module')
def rgb():
  return cv2.cvtColor(cv2.imread(PHOTO), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope='module')
def face(finder, rgb):
  (face,) = finder.find(rgb)
  return face


def _eye_distance(points):
  return np.linalg.norm(points[36] - points[45])


def test_one_face_with_plausible_landmarks(face):
  points, (x0, y0, x1, y1) = face.landmarks, face.box
  assert points.shape == (68, 2) and face.score > 0.5 and face.pose is None
  # Inside the detected box (give or take a tenth), in anatomical order:
  # eyes above the nose tip above the mouth above the chin, left eye left.
  margin = 0.1 * (x1 - x0)
  assert ((points >= [x0 - margin, y0 - margin]) &
          (points <= [x1 + margin, y1 + margin])).all()
  left_eye, right_eye = points[36:42].mean(0), points[42:48].mean(0)
  assert left_eye[0] < points[30, 0] < right_eye[0]
  assert max(left_eye[1], right_eye[1]) < points[30, 1] < points[48:60, 1].min()
  assert points[48:60, 1].max() < points[8, 1]
  assert 0.4 * (x1 - x0) < _eye_distance(points) < 0.9 * (x1 - x0)


@pytest.mark.parametrize('convert, tolerance', [
    (lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 0.03),
    (lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None], 0.03),
    (lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]), 0),
    (lambda rgb: rgb.astype(np.uint16) * 257, 0),
    (lambda rgb: rgb / 255.0, 0),
])
def test_grey_rgba_uint16_and_float_give_nearly_the_same_points(
    finder, rgb, face, convert, tolerance):
  (other,) = finder.find(convert(rgb))
  error = np.abs(other.landmarks - face.landmarks).max()
  assert error <= tolerance * _eye_distance(face.landmarks) + 1e-9


def test_bgr_frames_as_opencv_reads_them(finder, face):
  (other,) = finder.find(cv2.imread(PHOTO), bgr=True)
  np.testing.assert_allclose(other.landmarks, face.landmarks)
  bgra = cv2.imread(PHOTO, cv2.IMREAD_COLOR)[..., [0, 1, 2, 2]]
  (other,) = finder.find(bgra, bgr=True)
  np.testing.assert_allclose(other.landmarks, face.landmarks)


def test_pose_of_a_near_frontal_face_when_asked(finder, rgb):
  (face,) = finder.find(rgb, pose=True)
  pose = face.pose
  # She faces the camera from near the top of the frame: a pitch of about
  # the angle she is off the camera's axis (facelandmark/head_pose.py).
  assert abs(pose.yaw) < 15 and abs(pose.roll) < 10 and -30 < pose.pitch < 0
  assert pose.error < 0.1 * _eye_distance(face.landmarks)


def test_as_dict_is_json_in_corner_coordinates(finder, rgb):
  (face,) = finder.find(rgb, pose=True)
  record = json.loads(json.dumps(face.as_dict()))
  assert list(record) == ['box', 'score', 'landmarks', 'pose']
  np.testing.assert_allclose(record['box'], face.box, atol=5e-4)
  np.testing.assert_allclose(record['landmarks'], face.landmarks, atol=5e-4)
  assert record['pose']['yaw'] == round(face.pose.yaw, 1)
  tracked = finder_lib.Face(face.box, 0.5, face.landmarks, id=3)
  assert list(tracked.as_dict()) == ['id', 'box', 'score', 'landmarks']


@pytest.mark.parametrize('shape', [(240, 320, 3), (240, 320), (64, 64, 4)])
def test_blank_images_have_no_faces(finder, shape):
  assert finder.find(np.zeros(shape, np.uint8), pose=True) == []


def test_a_huge_photo(finder, face):
  # 8000 x 6000 with the photo scaled 10 times in it: the detector sees a
  # letterboxed copy, the landmarker cuts its views from the full image.
  huge = np.zeros((6000, 8000, 3), np.uint8)
  huge[500:5620, 1000:6120] = cv2.resize(cv2.imread(PHOTO), (5120, 5120))
  (big,) = finder.find(huge, bgr=True)
  expected = face.landmarks * 10 + [1000, 500]
  assert np.abs(big.landmarks - expected).max() < 0.05 * _eye_distance(
      expected)


def test_images_it_cannot_take_say_why(finder):
  with pytest.raises(ValueError, match='2 channels'):
    finder.find(np.zeros((32, 32, 2), np.uint8))
  with pytest.raises(ValueError, match='empty'):
    finder.find(np.zeros((0, 32, 3), np.uint8))
