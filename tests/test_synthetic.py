"""Generated cartoon faces: exact, deterministic, drawn where the points are."""

import os

import numpy as np
import pytest

from facelandmark import geometry
from pipeline import synthetic


def _render(seed, num_faces=2, width=160, height=128):
  return synthetic.render_image(np.random.default_rng(seed), width, height,
                                num_faces)


def test_template_follows_the_ibug_mirror_order():
  # Mirroring the face and renumbering the points gives the face back, which
  # holds only if every point sits where iBUG's numbering puts it.
  shape = synthetic.template()
  mirrored = (shape * [-1, 1])[list(geometry.MIRROR_PERMUTATION)]
  np.testing.assert_allclose(mirrored, shape, atol=1e-12)
  assert shape[36, 0] < shape[39, 0] < 0 < shape[42, 0] < shape[45, 0]
  assert shape[8, 1] == shape[:, 1].max()  # chin at the bottom
  assert shape[19, 1] < shape[37, 1] < shape[30, 1] < shape[51, 1]


@pytest.mark.parametrize('seed', range(4))
def test_faces_lie_inside_the_image_and_apart(seed):
  image, faces = _render(seed, num_faces=3)
  assert image.shape == (128, 160, 3) and image.dtype == np.uint8
  assert len(faces) == 3
  for landmarks in faces:
    assert landmarks.shape == (geometry.NUM_LANDMARKS, 2)
    assert np.all(landmarks >= 0) and np.all(landmarks <= [160, 128])
  boxes = [geometry.landmark_box(lm) for lm in faces]
  for i, a in enumerate(boxes):
    for b in boxes[i + 1:]:
      assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_same_seed_same_image():
  image, faces = _render(7)
  again, faces_again = _render(7)
  other, _ = _render(8)
  np.testing.assert_array_equal(image, again)
  np.testing.assert_array_equal(faces, faces_again)
  assert np.abs(image.astype(int) - other).mean() > 10


def _pixel(image, point):
  x, y = np.floor(point).astype(int)
  return image[y, x].astype(float)


@pytest.mark.parametrize('seed', range(6))
def test_features_are_drawn_at_their_landmarks(seed):
  image, faces = _render(seed, num_faces=1, width=200, height=200)
  lm = faces[0]
  cheek = _pixel(image, (lm[3] + lm[48] + lm[31]) / 3)
  face_centre = lm[:17].mean(axis=0)
  for eye in (lm[36:42], lm[42:48]):
    assert np.linalg.norm(_pixel(image, eye.mean(axis=0)) - cheek) > 40
  assert np.linalg.norm(_pixel(image, lm[51] * 0.7 + lm[62] * 0.3)
                        - cheek) > 30  # upper lip
  # Just inside the chin is skin; just outside it is not.
  direction = (lm[8] - face_centre) / np.linalg.norm(lm[8] - face_centre)
  assert np.linalg.norm(_pixel(image, lm[8] - 3 * direction) - cheek) < 30
  assert np.linalg.norm(_pixel(image, lm[8] + 3 * direction) - cheek) > 30


def test_write_dataset_layouts(tmp_path):
  written = synthetic.write_dataset(tmp_path / 'pts', 3, layout='pts', seed=2,
                                    width=64, height=64)
  again = synthetic.write_dataset(tmp_path / 'xml', 3, layout='xml', seed=2,
                                  width=64, height=64)
  assert [rel for rel, _ in written] == [
      'afw/face00000.jpg', 'helen/trainset/face00001.jpg',
      'lfpw/trainset/face00002.jpg']
  for (rel, faces), (_, faces_again) in zip(written, again):
    np.testing.assert_array_equal(faces, faces_again)
    assert ((tmp_path / 'pts' / rel).read_bytes() ==
            (tmp_path / 'xml' / rel).read_bytes())
    for k in range(len(faces)):
      pts = rel.replace('.jpg', f'_{k + 1}.pts')
      assert os.path.exists(tmp_path / 'pts' / pts)
  assert not os.path.exists(tmp_path / 'pts' / 'labels.xml')
  assert os.path.exists(tmp_path / 'xml' / 'labels.xml')
  assert not list((tmp_path / 'xml').glob('**/*.pts'))
  with pytest.raises(ValueError, match='layout=json'):
    synthetic.write_dataset(tmp_path, 1, layout='json')
