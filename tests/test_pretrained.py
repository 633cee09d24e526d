"""The shipped model on the bundled photo: README's first command, checked."""

import json
import os

import numpy as np

from facelandmark import command
from facelandmark import geometry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTO = os.path.join(REPO, 'assets', 'eileen_collins_nasa.jpg')


def test_shipped_model_finds_a_plausible_face_on_the_bundled_photo(tmp_path):
  summary = command.run(
      command.WebcamConfig(source=PHOTO, output=str(tmp_path / 'out.jpg'),
                              json=str(tmp_path / 'out.json'), headless=True),
      log=lambda *_: None)
  assert os.path.getsize(tmp_path / 'out.jpg') > 0
  frames = json.load(open(tmp_path / 'out.json'))['frames']
  assert len(frames) == 1 and len(frames[0]['faces']) == 1, summary
  face = frames[0]['faces'][0]
  points, box = np.array(face['landmarks']), np.array(face['box'])
  assert points.shape == (68, 2)
  # Points stay around the detected face, in anatomical order: eyes above
  # the nose tip above the mouth above the chin; the left eye on the left.
  x0, y0, x1, y1 = geometry.square_around(box, 1.3)
  assert ((points >= [x0, y0]) & (points <= [x1, y1])).all()
  left_eye, right_eye = points[36:42].mean(0), points[42:48].mean(0)
  assert left_eye[0] < right_eye[0]
  assert max(left_eye[1], right_eye[1]) < points[30, 1] < points[48:60, 1].mean()
  assert points[48:60, 1].mean() < points[8, 1]
  eye_distance = np.linalg.norm(points[36] - points[45])
  assert 0.3 * (box[2] - box[0]) < eye_distance < 0.9 * (box[2] - box[0])
