"""Cartoon faces with exact 68-point landmarks, for tests and demos sans 300-W.

Every face is drawn from its landmarks (skin bounded by the jaw points 0-16 and
a forehead arc, brows through 17-26, nose through 27-35, eyes and lips as
polygons through 36-67), so the points are visible in the pixels and a network
can learn them. `write_dataset` lays the images out like 300-W (.pts files,
dlib XML or both) so that the real reading code runs on them:

  python -m pipeline.synthetic --output_dir=/tmp/synth --num_images=200
"""

import dataclasses
import os
import xml.etree.ElementTree as ET

import cv2
import numpy as np

from facelandmark import config_flags
from facelandmark.config_flags import option
from facelandmark import geometry

SUBSETS = ('afw', 'helen/trainset', 'lfpw/trainset', 'ibug')
# Radius around the face origin, in face units (face half-width 1), holding the
# hair, forehead and chin: faces whose circles do not meet never overlap.
FACE_RADIUS = 1.35
_SHIFT = 4  # OpenCV drawing with 1/16 pixel precision
_EYE_ANGLES = np.pi * np.array([1, 2 / 3, 1 / 3, 0, -1 / 3, -2 / 3])


def _arc(centre, radii, angles):
  """Ellipse points at `angles` (radians, counter-clockwise when y is up)."""
  angles = np.asarray(angles, np.float64)
  return np.stack([centre[0] + radii[0] * np.cos(angles),
                   centre[1] - radii[1] * np.sin(angles)], axis=-1)


def _mirror(points):
  return points * [-1, 1]


def template(jaw_height=1.2, eye_size=(0.2, 0.08), mouth_width=0.38,
             mouth_open=0.0, brow_raise=0.0):
  """The 68 points of a frontal face in face units: half-width 1, y down.

  Point order is iBUG's (see geometry.MIRROR_PERMUTATION): 0-16 jaw from the
  image-left temple round the chin, 17-21 and 22-26 brows, 27-30 nose bridge,
  31-35 nose base, 36-41 and 42-47 eyes clockwise from the left corner, 48-59
  outer and 60-67 inner lips clockwise from the left corner.
  """
  jaw = _arc((0, -0.2), (1.0, jaw_height), np.linspace(np.pi, 2 * np.pi, 17))
  brow = _arc((-0.5, -0.45 - brow_raise), (0.33, 0.12),
              np.linspace(0.95 * np.pi, 0.1 * np.pi, 5))
  bridge = np.stack([np.zeros(4), np.linspace(-0.25, 0.18, 4)], axis=-1)
  base_x = np.linspace(-0.2, 0.2, 5)
  base = np.stack([base_x, 0.3 - 0.04 * (base_x / 0.2)**2], axis=-1)
  left_eye = _arc((-0.42, -0.25), eye_size, _EYE_ANGLES)
  right_eye = _arc((0.42, -0.25), eye_size, _EYE_ANGLES)
  mouth_y = 0.45 + 0.4 * (jaw_height - 1.05)
  upper = _arc((0, mouth_y), (mouth_width, 0.1), np.linspace(np.pi, 0, 7))
  lower = _arc((0, mouth_y), (mouth_width, 0.12 + mouth_open),
               np.linspace(-np.pi / 6, -5 * np.pi / 6, 5))
  inner_rx = 0.7 * mouth_width
  inner_upper = _arc((0, mouth_y), (inner_rx, 0.02),
                     np.linspace(np.pi, 0, 5))
  inner_lower = _arc((0, mouth_y), (inner_rx, 0.02 + mouth_open),
                     np.linspace(-np.pi / 4, -3 * np.pi / 4, 3))
  return np.concatenate([jaw, brow, _mirror(brow[::-1]), bridge, base,
                         left_eye, right_eye, upper, lower, inner_upper,
                         inner_lower])


def _forehead():
  """Forehead arc from the right temple (point 16) over to the left one (0)."""
  return _arc((0, -0.2), (1.0, 0.95), np.linspace(0, np.pi, 19)[1:-1])


def _random_face_shape(rng):
  jaw_height = rng.uniform(1.05, 1.3)
  # The lower lip stays at least 0.1 above the chin (see `template`).
  max_open = 0.18 + 0.6 * (jaw_height - 1.05)
  return dict(jaw_height=jaw_height,
              eye_size=(rng.uniform(0.15, 0.22), rng.uniform(0.06, 0.1)),
              mouth_width=rng.uniform(0.3, 0.42),
              mouth_open=rng.choice([0.0, rng.uniform(0.0, max_open)]),
              brow_raise=rng.uniform(-0.04, 0.1))


def _pose(rng, centre, scale):
  """Face units -> image corner coordinates: squash one side, rotate, place."""
  angle = np.deg2rad(rng.uniform(-30, 30))
  squash_side, squash = rng.choice([-1, 1]), rng.uniform(0.75, 1.0)
  rotation = np.array([[np.cos(angle), -np.sin(angle)],
                       [np.sin(angle), np.cos(angle)]])

  def apply(points):
    x = np.where(np.sign(points[:, 0]) == squash_side,
                 points[:, 0] * squash, points[:, 0])
    return np.stack([x, points[:, 1]], -1) @ rotation.T * scale + centre

  return apply


def _cv_points(points):
  """Corner coordinates -> OpenCV's fixed-point pixel-centre coordinates."""
  return np.round((np.asarray(points) - 0.5) * (1 << _SHIFT)).astype(np.int32)


def _fill(image, points, colour):
  cv2.fillPoly(image, [_cv_points(points)], colour, cv2.LINE_AA, _SHIFT)


def _line(image, points, colour, thickness, closed=False):
  cv2.polylines(image, [_cv_points(points)], closed, colour,
                max(1, int(round(thickness))), cv2.LINE_AA, _SHIFT)


def _colour(rng, low=0, high=256):
  return tuple(int(c) for c in rng.integers(low, high, 3))


def _skin(rng):
  """A skin-like BGR colour, from dark to light."""
  bgr = np.array([140, 180, 240]) * rng.uniform(0.3, 1.0) + rng.normal(0, 12, 3)
  return tuple(int(c) for c in np.clip(bgr, 0, 255))


def _far_colour(rng, avoid, min_distance=90):
  """A random colour at least `min_distance` (RGB L2) away from `avoid`."""
  while True:
    colour = _colour(rng)
    if np.linalg.norm(np.subtract(colour, avoid)) >= min_distance:
      return colour


def _background(rng, width, height, avoid):
  image = np.empty((height, width, 3), np.uint8)
  image[:] = _far_colour(rng, avoid)
  for _ in range(rng.integers(3, 12)):
    centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
    axes = (int(rng.integers(5, width // 3)), int(rng.integers(5, height // 3)))
    cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360,
                _far_colour(rng, avoid, 60), -1, cv2.LINE_AA)
  noise = rng.normal(0, rng.uniform(2, 8), image.shape)
  return np.clip(image + noise, 0, 255).astype(np.uint8)


def _draw_face(image, rng, pose, scale, shape, skin):
  """Draws one face; returns its landmarks in image corner coordinates."""
  landmarks = pose(template(**shape))
  shade = tuple(int(c * 0.6) for c in skin)
  if rng.uniform() < 0.7:  # hair, behind the forehead
    _fill(image, pose(_arc((0, -0.3), (1.1, 1.0), np.linspace(0, np.pi, 25))),
          _far_colour(rng, skin))
  _fill(image, np.concatenate([landmarks[:17], pose(_forehead())]), skin)
  _line(image, landmarks[:17], shade, scale * 0.02)
  brow = _far_colour(rng, skin, 120)
  _line(image, landmarks[17:22], brow, scale * 0.07)
  _line(image, landmarks[22:27], brow, scale * 0.07)
  _line(image, landmarks[27:31], shade, scale * 0.03)
  _line(image, landmarks[31:36], shade, scale * 0.04)
  sclera, iris = (235, 240, 245), _colour(rng, 20, 160)
  for eye in (landmarks[36:42], landmarks[42:48]):
    _fill(image, eye, sclera)
    radius = 0.75 * shape['eye_size'][1] * scale
    centre = _cv_points(eye.mean(axis=0)[None])[0]
    cv2.circle(image, tuple(int(c) for c in centre),
               int(radius * (1 << _SHIFT)), iris, -1, cv2.LINE_AA, _SHIFT)
    _line(image, eye, (30, 30, 30), scale * 0.02, closed=True)
  _fill(image, landmarks[48:60], _far_colour(rng, skin, 80))
  _fill(image, landmarks[60:68], (40, 20, 60))
  return landmarks


def _place(rng, width, height, num_faces):
  """Face scale (px per face unit) and centres: apart, inside the image."""
  scale = rng.uniform(0.45, 0.95) * min(width, height) / (2 * FACE_RADIUS)
  scale /= np.sqrt(num_faces)
  while True:
    radius = FACE_RADIUS * scale
    centres = []
    for _ in range(100 * num_faces):
      centre = rng.uniform([radius, radius], [width - radius, height - radius])
      if all(np.linalg.norm(centre - c) > 2 * radius for c in centres):
        centres.append(centre)
        if len(centres) == num_faces:
          return scale, centres
    scale *= 0.85  # crowded: smaller faces


def render_image(rng, width, height, num_faces):
  """A BGR uint8 image of cartoon faces and their [68, 2] corner landmarks."""
  skins = [_skin(rng) for _ in range(num_faces)]
  image = _background(rng, width, height, np.mean(skins, axis=0))
  scale, centres = _place(rng, width, height, num_faces)
  landmarks = []
  for centre, skin in zip(centres, skins):
    pose = _pose(rng, centre, scale)
    landmarks.append(
        _draw_face(image, rng, pose, scale, _random_face_shape(rng), skin))
  image = cv2.GaussianBlur(image, (3, 3), 0.6)
  return image, landmarks


# 300-W style files.


def pts_text(landmarks):
  """A 300-W .pts file (1-based pixel centres) for [68, 2] corner landmarks."""
  points = geometry.to_pts(landmarks)
  lines = [f'{x:.6f} {y:.6f}' for x, y in points]
  return '\n'.join(['version: 1', f'n_points:  {len(points)}', '{'] + lines +
                   ['}']) + '\n'


def _xml_image(rel_path, width, height, faces):
  image = ET.Element('image', file=rel_path, width=str(width),
                     height=str(height))
  for landmarks in faces:
    x0, y0 = np.floor(landmarks.min(axis=0)).astype(int)
    x1, y1 = np.ceil(landmarks.max(axis=0)).astype(int)
    # dlib boxes are whole pixels: left/top is the first covered one.
    box = ET.SubElement(image, 'box', top=str(y0), left=str(x0),
                        width=str(x1 - x0), height=str(y1 - y0))
    for k, (x, y) in enumerate(geometry.to_dlib_xml(landmarks)):
      ET.SubElement(box, 'part', name=f'{k:02d}', x=f'{x:.6f}', y=f'{y:.6f}')
  return image


def _write_xml(path, images):
  root = ET.Element('dataset')
  ET.SubElement(root, 'name').text = 'Synthetic cartoon faces'
  ET.SubElement(root, 'images').extend(images)
  ET.indent(root)
  ET.ElementTree(root).write(path, encoding='ISO-8859-1', xml_declaration=True)


def write_dataset(output_dir, num_images, layout='pts', seed=0, width=320,
                  height=256, max_faces_per_image=2, subsets=SUBSETS):
  """Writes images in subset folders with .pts files and/or dlib `labels.xml`.

  Image i is `{subset}/face{i:05d}.jpg` (subsets taken in turn); its faces are
  annotated as `face{i:05d}_1.pts`, `_2.pts`, ... (the original AFW naming)
  and/or in `labels.xml`. Images depend only on (seed, i). Returns
  [(relative image path, [landmarks [68, 2] in corner coordinates])].
  """
  if layout not in ('pts', 'xml', 'both'):
    raise ValueError(f'layout={layout}: expected pts, xml or both')
  written, xml_images = [], []
  for i in range(num_images):
    rng = np.random.default_rng([seed, i])
    rel_path = f'{subsets[i % len(subsets)]}/face{i:05d}.jpg'
    image, faces = render_image(rng, width, height,
                                int(rng.integers(1, max_faces_per_image + 1)))
    path = os.path.join(output_dir, rel_path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if layout in ('pts', 'both'):
      for k, landmarks in enumerate(faces):
        with open(f'{os.path.splitext(path)[0]}_{k + 1}.pts', 'w') as f:
          f.write(pts_text(landmarks))
    if layout in ('xml', 'both'):
      xml_images.append(_xml_image(rel_path, width, height, faces))
    written.append((rel_path, faces))
  if layout in ('xml', 'both'):
    _write_xml(os.path.join(output_dir, 'labels.xml'), xml_images)
  return written


@dataclasses.dataclass
class SyntheticConfig:
  """`python -m pipeline.synthetic`'s flags: write_dataset's arguments."""
  output_dir: str = option(help='Folder to write the dataset into.')
  num_images: int = option(100, 'Images to draw.')
  layout: str = option('pts', 'Annotation files to write.',
                       ('pts', 'xml', 'both'))
  seed: int = option(0, 'Random seed; same seed, same files.')
  width: int = option(320, 'Image width in pixels.')
  height: int = option(256, 'Image height in pixels.')
  max_faces_per_image: int = option(2, 'Faces per image: 1 to this.')


def main(argv):
  del argv
  cfg = config_flags.config_from_flags(SyntheticConfig)
  written = write_dataset(**dataclasses.asdict(cfg))
  print(f'{len(written)} images, {sum(len(f) for _, f in written)} faces '
        f'written to {cfg.output_dir}')


if __name__ == '__main__':
  config_flags.define_flags(SyntheticConfig, required=('output_dir',))
  config_flags.run(main, 'synthetic')
