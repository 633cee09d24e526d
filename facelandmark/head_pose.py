"""Head pose (yaw, pitch, roll) from the 68 iBUG landmarks of one face.

The landmarks are matched to a generic 3D face (`MODEL_POINTS`) with
cv2.solvePnP through a pinhole camera guessed from the image size
(`camera_matrix`): focal length max(height, width) pixels, principal point at
the image centre, no distortion. A webcam or phone photo is near that (a
horizontal field of view of about 53 degrees); a calibrated camera's matrix
would do better, but none is known here.

Frames. The camera's is OpenCV's: x to image right, y down, z forward. The
model's is the camera's for a face looking straight into the camera: x toward
the face's left (image right), y down (forehead to chin), z from the face back
into the head, origin at the nose tip (point 30), in millimetres. So
`rotation` is the identity for a frontal face, and `translation` is where the
nose tip is, in millimetres from the camera.

Angles, in degrees:
  yaw > 0: the face turns toward image right (its own left);
  pitch > 0: the face turns up (chin forward, nose toward the image top);
  roll > 0: the face turns clockwise in the image (its left eye goes down).
rotation = Ry(-yaw) @ Rx(-pitch) @ Rz(roll), with R* OpenCV-frame rotations by
the right-hand rule: yaw and pitch are where the nose points (azimuth and
elevation), roll is the turn about that direction. They are relative to the
camera's axes, not to the line of sight: a face that looks into the camera
from near the top of the image has a negative pitch, about the angle it is
off the axis.
"""

import dataclasses

import cv2
import numpy as np

from facelandmark import drawing
from facelandmark import geometry

# The image-left half and the centre line of a generic adult face, millimetres
# in the model frame; the right half is their mirror image (`_mirrored`).
# Derived from MediaPipe's canonical face mesh
# (mediapipe/modules/face_geometry/data/canonical_face_model.obj, Apache 2.0,
# Copyright Google LLC; see models/LICENSE): its vertices (the numbers
# after #) scaled from centimetres, y and z flipped, moved to the nose tip.
# Jaw points 0-7 are evenly spaced along the face oval 127-234-93-132-58-172-
# 136-150-149-176-148 to the chin 152, and 28-29 split the nose ridge 168-4 in
# thirds, spaced as 300-W's annotation spaces them. Against the 68-point OpenFace mean
# (academic licence, so not used here) it differs by 5.5 mm on average after a
# similarity fit, mostly in the depth of the jaw line.
_HALF_MODEL = {
    0: (-77.4, -28.3, 95.9),
    1: (-76.3, -6.2, 100.2),
    2: (-73.9, 16.2, 99.2),
    3: (-68.8, 37.7, 94.8),
    4: (-60.6, 55.4, 83.9),
    5: (-50.3, 67.6, 68.1),
    6: (-37.0, 77.6, 52.8),
    7: (-21.2, 85.7, 38.9),
    8: (0.0, 89.4, 33.2),  # 152
    17: (-57.2, -47.2, 47.6),  # 70
    18: (-49.9, -52.7, 38.3),  # 63
    19: (-39.9, -55.7, 31.2),  # 105
    20: (-27.6, -55.6, 25.7),  # 66
    21: (-14.0, -54.8, 22.7),  # 107
    27: (0.0, -37.3, 23.5),  # 168
    28: (0.0, -25.2, 15.1),
    29: (0.0, -13.1, 6.7),
    30: (0.0, 0.0, 0.0),  # 4
    31: (-14.1, 12.5, 23.5),  # 98
    32: (-6.0, 15.5, 17.2),  # 97
    33: (0.0, 16.3, 15.3),  # 2
    36: (-44.5, -31.3, 44.1),  # 33
    37: (-36.7, -33.9, 38.6),  # 160
    38: (-27.2, -34.2, 37.1),  # 158
    39: (-18.6, -30.5, 38.3),  # 133
    40: (-27.2, -27.8, 38.1),  # 153
    41: (-36.7, -28.2, 39.5),  # 144
    48: (-24.6, 38.8, 33.0),  # 61
    49: (-14.3, 30.4, 20.9),  # 39
    50: (-7.1, 28.7, 17.1),  # 37
    51: (0.0, 29.4, 16.1),  # 0
    57: (0.0, 49.0, 20.5),  # 17
    58: (-7.0, 48.3, 21.4),  # 84
    59: (-15.8, 45.0, 25.7),  # mean of 91 and 181
    60: (-21.5, 38.1, 35.5),  # 78
    61: (-5.3, 35.3, 24.5),  # 82
    62: (0.0, 35.3, 23.7),  # 13
    66: (0.0, 40.8, 21.8),  # 14
    67: (-5.8, 40.5, 22.5),  # 87
}
NOSE_TIP = 30
# Drawn axes, in the model frame: the face's left, up and forward (out of the
# face); a right-handed frame, drawn red, green and blue (BGR).
AXES = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])
AXIS_COLOURS = ((0, 0, 255), (0, 255, 0), (255, 0, 0))


def _mirrored(half):
  """[68, 3] points from one half and the centre line (x -> -x across it)."""
  points = np.full((geometry.NUM_LANDMARKS, 3), np.nan)
  for k, point in half.items():
    points[k] = point
    points[geometry.MIRROR_PERMUTATION[k]] = np.multiply(point, [-1, 1, 1])
  return points


MODEL_POINTS = _mirrored(_HALF_MODEL)


@dataclasses.dataclass(frozen=True, eq=False)
class HeadPose:
  """One face's pose; angles in degrees (see the module docstring).

  Attributes:
    yaw, pitch, roll: degrees.
    rotation: [3, 3] model frame -> camera frame.
    translation: [3] the nose tip in the camera frame, millimetres (its depth
      is only as right as the generic face's size and the guessed focal
      length).
    error: RMS distance, in pixels, between the landmarks and the fitted
      model's projection: large (and the pose meaningless) when the landmarks
      do not look like a face.
  """
  yaw: float
  pitch: float
  roll: float
  rotation: np.ndarray
  translation: np.ndarray
  error: float

  @property
  def rvec(self):
    """OpenCV's rotation vector (axis times angle, radians), shape [3]."""
    return cv2.Rodrigues(self.rotation)[0].ravel()

  def as_dict(self):
    """JSON-ready: degrees and pixels to 0.1, rvec to 1e-4, tvec in mm."""
    return dict(yaw=round(self.yaw, 1), pitch=round(self.pitch, 1),
                roll=round(self.roll, 1), error=round(self.error, 1),
                rvec=[round(float(v), 4) for v in self.rvec],
                tvec=[round(float(v), 1) for v in self.translation])


def camera_matrix(image_size):
  """Pinhole matrix for an (height, width) image, in corner coordinates.

  solvePnP works in whatever 2D frame the matrix is in: with the principal
  point at (width / 2, height / 2), the image centre in corner coordinates
  (geometry.py), the landmarks need no half-pixel shift.
  """
  height, width = _check_image_size(image_size)
  focal = float(max(height, width))
  return np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])


def rotation_matrix(yaw, pitch, roll):
  """Ry(-yaw) @ Rx(-pitch) @ Rz(roll), angles in degrees."""
  y, p, r = np.deg2rad([yaw, pitch, roll])
  ry = np.array([[np.cos(y), 0, -np.sin(y)], [0, 1, 0],
                 [np.sin(y), 0, np.cos(y)]])
  rx = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)],
                 [0, -np.sin(p), np.cos(p)]])
  rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0],
                 [0, 0, 1]])
  return ry @ rx @ rz


def euler_angles(rotation):
  """(yaw, pitch, roll) in degrees of a rotation matrix: `rotation_matrix`'s
  inverse for |pitch| < 90."""
  forward = -np.asarray(rotation, np.float64)[:, 2]  # where the nose points
  yaw = np.degrees(np.arctan2(forward[0], -forward[2]))
  pitch = np.degrees(np.arctan2(-forward[1], np.hypot(forward[0], forward[2])))
  rest = rotation_matrix(yaw, pitch, 0).T @ rotation  # Rz(roll)
  roll = np.degrees(np.arctan2(rest[1, 0], rest[0, 0]))
  return float(yaw), float(pitch), float(roll)


def project(points, pose, image_size):
  """[N, 3] model-frame points (mm) -> [N, 2] image corner coordinates."""
  return _project(points, pose.rvec, pose.translation,
                  camera_matrix(image_size))


def _project(points, rvec, tvec, camera):
  projected, _ = cv2.projectPoints(np.asarray(points, np.float64),
                                   np.asarray(rvec, np.float64),
                                   np.asarray(tvec, np.float64), camera, None)
  return projected.reshape(-1, 2)


def estimate(landmarks, image_size):
  """The head pose of one face.

  Args:
    landmarks: [68, 2] iBUG points in image corner coordinates.
    image_size: (height, width) of the image they are on, in pixels.

  Returns:
    A HeadPose.

  Raises:
    ValueError: landmarks of the wrong shape, not finite, all at one point or
      on one line; an image size that is not two positive numbers.
  """
  points = _check_landmarks(landmarks)
  camera = camera_matrix(image_size)
  # SQPnP needs no starting guess; the iterative solver's own (DLT) start
  # left it far off for 1 in 9 generated faces. LM then minimises the
  # reprojection error itself.
  _, rvec, tvec = cv2.solvePnP(MODEL_POINTS, points, camera, None,
                               flags=cv2.SOLVEPNP_SQPNP)
  rvec, tvec = cv2.solvePnPRefineLM(MODEL_POINTS, points, camera, None, rvec,
                                    tvec)
  residuals = _project(MODEL_POINTS, rvec, tvec, camera) - points
  error = float(np.sqrt(np.mean(np.sum(residuals**2, axis=1))))
  rotation = cv2.Rodrigues(rvec)[0]
  return HeadPose(*euler_angles(rotation), rotation, tvec.ravel(), error)


def estimate_all(landmarks, image_size):
  """HeadPoses of [K, 68, 2] landmarks (one image's faces), as a list."""
  return [estimate(points, image_size) for points in landmarks]


def axes_points(pose, image_size, length=60.0):
  """[4, 2] corner coordinates: the nose tip, then the ends of the face's
  left, up and forward axes (`AXES`), `length` millimetres long."""
  ends = np.concatenate([np.zeros((1, 3)), length * AXES])
  return project(ends + MODEL_POINTS[NOSE_TIP], pose, image_size)


def draw_axes(canvas, pose, length=60.0, colours=AXIS_COLOURS, thickness=2):
  """The pose's axes from the nose tip on BGR `canvas`, in place.

  `canvas` is the image the pose was estimated on (its size is the camera's).
  """
  origin, *ends = axes_points(pose, canvas.shape[:2], length)
  for end, colour in zip(ends, colours):
    cv2.arrowedLine(canvas, drawing.cv_point(origin), drawing.cv_point(end),
                    colour, thickness, cv2.LINE_AA, drawing.SHIFT, 0.15)
  return canvas


def _check_landmarks(landmarks):
  points = np.asarray(landmarks, np.float64)
  if points.shape != (geometry.NUM_LANDMARKS, 2):
    raise ValueError(f'landmarks must be [{geometry.NUM_LANDMARKS}, 2], got '
                     f'shape {points.shape}')
  bad = np.flatnonzero(~np.isfinite(points).all(axis=1))
  if bad.size:
    raise ValueError(f'landmarks {bad.tolist()} are NaN or infinite')
  spread = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
  if spread[0] == 0:
    raise ValueError('landmarks are all at one point: no face to fit')
  # A line of points fits any rotation about it: no pose to report.
  if spread[1] < 1e-6 * spread[0]:
    raise ValueError('landmarks lie on one line: no face to fit')
  return points


def _check_image_size(image_size):
  size = tuple(np.asarray(image_size).ravel().tolist())
  if len(size) != 2 or not all(np.isfinite(size)) or min(size) <= 0:
    raise ValueError(f'image_size must be (height, width) in pixels, got '
                     f'{image_size!r}')
  return size
