"""Landmark conventions and face-crop geometry shared by every module.

Coordinates everywhere in the project are *corner* coordinates: pixel (i, j)
covers [i, i+1) x [j, j+1), so its centre is at (i + 0.5, j + 0.5). With that
convention resizing is a pure scale and cropping a pure shift, with no half-pixel
fix-ups scattered around. The datasets use pixel-centre conventions and are
converted once, on reading (see `from_pts` and `from_dlib_xml`).
"""

import numpy as np

NUM_LANDMARKS = 68
# Outer eye corners (0-based iBUG indices): the 300-W normalisation for NME.
LEFT_EYE_OUTER, RIGHT_EYE_OUTER = 36, 45
LEFT_EYE = tuple(range(36, 42))
RIGHT_EYE = tuple(range(42, 48))


def _mirror_permutation():
  pairs = [(i, 16 - i) for i in range(8)]                     # jaw
  pairs += [(17 + i, 26 - i) for i in range(5)]               # eyebrows
  pairs += [(31, 35), (32, 34)]                               # nostrils
  pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
  pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lips
  pairs += [(60, 64), (61, 63), (65, 67)]                     # inner lips
  perm = list(range(NUM_LANDMARKS))
  for a, b in pairs:
    perm[a], perm[b] = b, a
  return tuple(perm)


# After a horizontal flip, point k of the mirrored face is point MIRROR[k] of the
# original (an involution: left eye <-> right eye, centre-line points fixed).
MIRROR_PERMUTATION = _mirror_permutation()


def from_pts(points):
  """300-W .pts points (1-based pixel centres) to corner coordinates."""
  return np.asarray(points, np.float64) - 0.5


def from_dlib_xml(points):
  """dlib imglab XML points (0-based pixel centres) to corner coordinates."""
  return np.asarray(points, np.float64) + 0.5


def to_dlib_xml(points):
  return np.asarray(points, np.float64) - 0.5


def to_pts(points):
  return np.asarray(points, np.float64) + 0.5


def landmark_box(landmarks):
  """Tight [x0, y0, x1, y1] box of a [68, 2] landmark array."""
  lm = np.asarray(landmarks, np.float64)
  return np.concatenate([lm.min(axis=0), lm.max(axis=0)])


def square_around(box, scale):
  """Square [x0, y0, x1, y1] centred on `box`, side = scale * max(w, h)."""
  x0, y0, x1, y1 = (float(v) for v in box)
  side = scale * max(x1 - x0, y1 - y0)
  cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
  return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def to_crop(points, crop, size):
  """Maps image corner coordinates into a `size`-pixel resize of square `crop`."""
  x0, y0, x1, _ = crop
  return (np.asarray(points, np.float64) - [x0, y0]) * (size / (x1 - x0))


def from_crop(points, crop, size):
  """Inverse of `to_crop`: crop pixels back to image corner coordinates."""
  x0, y0, x1, _ = crop
  return np.asarray(points, np.float64) * ((x1 - x0) / size) + [x0, y0]


def _legend():
  """(name, group) of each of the 68 points. Left and right are the image's
  (a viewer's), as in LEFT_EYE: the 'left eye' is the subject's right eye."""
  named = {0: 'jaw_left_end', 8: 'chin', 16: 'jaw_right_end',
           17: 'left_eyebrow_outer_end', 21: 'left_eyebrow_inner_end',
           22: 'right_eyebrow_inner_end', 26: 'right_eyebrow_outer_end',
           27: 'nose_bridge_top', 30: 'nose_tip', 31: 'nostril_left_end',
           33: 'nose_bottom_centre', 35: 'nostril_right_end',
           36: 'left_eye_outer_corner', 39: 'left_eye_inner_corner',
           42: 'right_eye_inner_corner', 45: 'right_eye_outer_corner',
           48: 'mouth_left_corner', 51: 'upper_lip_top_centre',
           54: 'mouth_right_corner', 57: 'lower_lip_bottom_centre',
           60: 'mouth_inner_left_corner', 62: 'upper_lip_inner_centre',
           64: 'mouth_inner_right_corner', 66: 'lower_lip_inner_centre'}
  groups = (('jaw', 0, 17), ('left_eyebrow', 17, 22),
            ('right_eyebrow', 22, 27), ('nose_bridge', 27, 31),
            ('nose_bottom', 31, 36), ('left_eye', 36, 42),
            ('right_eye', 42, 48), ('outer_lips', 48, 60),
            ('inner_lips', 60, 68))
  legend = [(named.get(i, f'{group}_{i - start}'), group)
            for group, start, end in groups for i in range(start, end)]
  # The right side's other points are numbered as their left mirrors are.
  return tuple(
      (legend[MIRROR_PERMUTATION[i]][0].replace('left', 'right'), group)
      if group.startswith('right') and i not in named else (name, group)
      for i, (name, group) in enumerate(legend))


# (name, group) of point k, 0-based iBUG order.
LEGEND = _legend()
