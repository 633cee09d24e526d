"""facelandmark/head_pose.py: angles of generated faces whose pose is known, the sign
convention in image terms, the shipped model's photo, and bad input."""

import itertools
import json
import os

import cv2
import numpy as np
import pytest

from facelandmark import head_pose
from model import landmarker as landmarker_lib
from facelandmark import geometry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTO = os.path.join(REPO, 'assets', 'eileen_collins_nasa.jpg')
SIZE = (480, 640)  # (height, width): a webcam frame


def face(rotation, translation=(0, 0, 700), noise=0.0, seed=0):
  """The model's landmarks seen through the head_pose camera, plus noise."""
  pose = head_pose.HeadPose(0, 0, 0, np.asarray(rotation, np.float64),
                            np.asarray(translation, np.float64), 0)
  points = head_pose.project(head_pose.MODEL_POINTS, pose, SIZE)
  return points + np.random.default_rng(seed).normal(0, noise, points.shape)


def angles(pose):
  return np.array([pose.yaw, pose.pitch, pose.roll])


def test_rotation_matrix_and_euler_angles_invert_each_other():
  for yaw, pitch, roll in itertools.product([-70, 0, 35], [-40, 15], [-50, 0,
                                                                      20]):
    rotation = head_pose.rotation_matrix(yaw, pitch, roll)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(head_pose.euler_angles(rotation),
                               [yaw, pitch, roll], atol=1e-9)


def test_estimate_recovers_set_poses_within_two_degrees():
  rng = np.random.default_rng(1)
  errors = []
  for seed, (yaw, pitch, roll) in enumerate(itertools.product(
      [-40, -20, 0, 20, 40], [-20, 0, 20], [-30, 0, 30])):
    translation = [rng.uniform(-80, 80), rng.uniform(-60, 60),
                   rng.uniform(500, 900)]
    rotation = head_pose.rotation_matrix(yaw, pitch, roll)
    pose = head_pose.estimate(face(rotation, translation, 0.5, seed), SIZE)
    errors.append(angles(pose) - [yaw, pitch, roll])
    np.testing.assert_allclose(pose.translation, translation,
                               atol=0.02 * translation[2])
    assert pose.error < 1.0  # about the 0.5 px noise's RMS length, 0.7
  assert np.abs(errors).max() < 2.0


@pytest.mark.parametrize('rvec, feature, sign', [
    # About the camera's vertical axis: the nose moves to image right of the
    # cheeks (jaw points 0 and 16, far behind it).
    ((0, -0.4, 0), lambda p: p[30, 0] - (p[0, 0] + p[16, 0]) / 2, 'yaw'),
    # About the camera's x axis: the nose moves up past the cheeks.
    ((-0.4, 0, 0), lambda p: (p[0, 1] + p[16, 1]) / 2 - p[30, 1], 'pitch'),
    # About the camera's optical axis: the image-right eye goes down.
    ((0, 0, 0.4), lambda p: p[45, 1] - p[36, 1], 'roll'),
])
def test_sign_convention_in_image_terms(rvec, feature, sign):
  """Turning right, up and clockwise in the image give positive angles."""
  frontal = face(np.eye(3))
  turned = face(cv2.Rodrigues(np.array(rvec, np.float64))[0])
  assert feature(turned) - feature(frontal) > 5  # pixels: it shows
  pose = head_pose.estimate(turned, SIZE)
  others = {'yaw', 'pitch', 'roll'} - {sign}
  assert getattr(pose, sign) == pytest.approx(np.degrees(0.4), abs=0.5)
  assert all(abs(getattr(pose, name)) < 0.5 for name in others)


def test_frontal_face_is_identity_and_mirror_image_negates_yaw_and_roll():
  frontal = head_pose.estimate(face(np.eye(3)), SIZE)
  np.testing.assert_allclose(frontal.rotation, np.eye(3), atol=1e-6)
  np.testing.assert_allclose(frontal.translation, [0, 0, 700], atol=1e-3)
  points = face(head_pose.rotation_matrix(25, 10, -15), noise=0.5)
  mirrored = (points * [-1, 1] + [SIZE[1], 0])[
      list(geometry.MIRROR_PERMUTATION)]
  np.testing.assert_allclose(
      angles(head_pose.estimate(mirrored, SIZE)),
      angles(head_pose.estimate(points, SIZE)) * [-1, 1, -1], atol=1e-3)


def test_estimate_all_and_as_dict():
  rotations = [head_pose.rotation_matrix(*a) for a in ((20, 0, 0), (0, 0, 0))]
  poses = head_pose.estimate_all(np.stack([face(r) for r in rotations]), SIZE)
  assert [round(p.yaw) for p in poses] == [20, 0]
  record = json.loads(json.dumps(poses[0].as_dict()))
  assert record['yaw'] == 20.0 and record['pitch'] == 0.0
  assert set(record) == {'yaw', 'pitch', 'roll', 'error', 'rvec', 'tvec'}
  np.testing.assert_allclose(record['rvec'], [0, -np.radians(20), 0],
                             atol=1e-4)
  assert head_pose.estimate_all(np.zeros((0, 68, 2)), SIZE) == []


def test_axes_start_at_the_nose_tip_and_point_left_up_forward():
  rotation = head_pose.rotation_matrix(30, 0, 0)
  pose = head_pose.estimate(face(rotation), SIZE)
  origin, left, up, forward = head_pose.axes_points(pose, SIZE, 50)
  np.testing.assert_allclose(origin, face(rotation)[30], atol=1e-3)
  assert left[0] > origin[0] + 20 and up[1] < origin[1] - 20
  assert forward[0] > origin[0] + 10  # the nose points to image right
  canvas = np.zeros(SIZE + (3,), np.uint8)
  head_pose.draw_axes(canvas, pose, 50)
  reds = np.argwhere((canvas[..., 2] > 200) & (canvas[..., :2].max(-1) < 60))
  assert reds.size and reds[:, 1].max() == pytest.approx(left[0], abs=2)


def test_shipped_model_on_the_bundled_photo_is_near_frontal():
  marker = landmarker_lib.Landmarker.load(os.path.join(REPO, 'pretrained'))
  image = cv2.cvtColor(cv2.imread(PHOTO), cv2.COLOR_BGR2RGB)
  # A rough box round the face (it is in the upper middle of the photo); the
  # refine pass frames it as the net was trained.
  (points,) = marker.predict(image, [[180, 60, 300, 190]], refine=True)
  pose = head_pose.estimate(points, image.shape[:2])
  assert np.abs(angles(pose)).max() < 25, pose.as_dict()
  eye_distance = np.linalg.norm(points[36] - points[45])
  assert pose.error < 0.1 * eye_distance and pose.translation[2] > 0


@pytest.mark.parametrize('landmarks, message', [
    (np.full((68, 2), np.nan), 'NaN'),
    (np.full((68, 2), 100.0), 'one point'),
    (np.stack([np.arange(68.0), 2 * np.arange(68.0)], -1), 'one line'),
    (np.zeros((5, 2)), r'\[68, 2\]'),
])
def test_degenerate_landmarks_raise(landmarks, message):
  with pytest.raises(ValueError, match=message):
    head_pose.estimate(landmarks, SIZE)


@pytest.mark.parametrize('size', [(0, 640), (480,), (480, -1), (np.nan, 9)])
def test_bad_image_size_raises(size):
  with pytest.raises(ValueError, match='image_size'):
    head_pose.estimate(face(np.eye(3)), size)
