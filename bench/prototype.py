"""The prototype's data path, rebuilt faithfully so benchmarks can run it beside
ours on the same faces: every crop in one gzip pickle, augmented per image with
OpenCV in a Python loop, fed to `model.fit` through a `keras.utils.PyDataset`
(Keras 3's `Sequence`)."""

import gzip
import math
import pickle

import cv2
import keras
import numpy as np

from facelandmark import geometry
from pipeline import reader


def pickle_crops(data_dir, split, path):
  """Decodes every stored face of a split into one gzip pickle, as the
  prototype did; returns the number of faces."""
  faces = []
  for batch in reader.make_dataset(data_dir, split, 64, training=False):
    for image, landmarks, box in zip(batch['image'].numpy(),
                                     batch['landmarks'].numpy(),
                                     batch['box'].numpy()):
      faces.append((image, landmarks, box))
  with gzip.open(path, 'wb') as f:
    pickle.dump(faces, f, protocol=pickle.HIGHEST_PROTOCOL)
  return len(faces)


def load_pickle(path):
  with gzip.open(path, 'rb') as f:
    return pickle.load(f)


def augment_one(image, landmarks, box, rng, input_size, view_scale,
                max_rotation=45.0, min_scale=0.7, max_scale=1.0):
  """One face: random rotation and scale with cv2.warpAffine, in Python."""
  x0, y0, x1, _ = geometry.square_around(box, view_scale)
  side = x1 - x0
  angle = rng.uniform(-max_rotation, max_rotation)
  scale = rng.uniform(min_scale, max_scale) * input_size / side
  centre = ((x0 + x1) / 2, (y0 + y0 + side) / 2)
  matrix = cv2.getRotationMatrix2D(centre, angle, scale)
  matrix[:, 2] += np.array([input_size / 2, input_size / 2]) - centre
  # cv2 samples at pixel centres: shift corner coordinates by half a pixel.
  shift = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
  unshift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
  full = shift @ np.vstack([matrix, [0, 0, 1]]) @ unshift
  view = cv2.warpAffine(image, full[:2], (input_size, input_size),
                        flags=cv2.INTER_LINEAR, borderValue=0)
  points = np.c_[landmarks, np.ones(len(landmarks))] @ np.vstack(
      [matrix, [0, 0, 1]]).T
  return view.astype(np.float32) / 255.0, points[:, :2] / input_size


class PrototypeSequence(keras.utils.PyDataset):
  """Batches of per-image OpenCV augmentation from the in-memory pickle."""

  def __init__(self, faces, batch_size, input_size, view_scale, seed=0,
               **kwargs):
    super().__init__(**kwargs)
    self.faces, self.batch_size = faces, batch_size
    self.input_size, self.view_scale = input_size, view_scale
    self.rng = np.random.default_rng(seed)

  def __len__(self):
    return math.ceil(len(self.faces) / self.batch_size)

  def __getitem__(self, index):
    picks = self.rng.integers(0, len(self.faces), self.batch_size)
    views, targets = zip(*(augment_one(*self.faces[i], self.rng,
                                       self.input_size, self.view_scale)
                           for i in picks))
    return np.stack(views), np.stack(targets)


def compile_like_prototype(model, learning_rate=1e-3):
  model.compile(optimizer=keras.optimizers.Adam(learning_rate, amsgrad=True),
                loss='mse')
  return model

