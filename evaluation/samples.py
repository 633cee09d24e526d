"""What evaluation runs on: images with their annotated faces, as Samples.

From prepared shards (one stored crop per face), a raw 300-W folder (one
photo per sample, every face on it) or generated faces.
"""

import dataclasses
import os

import cv2
import numpy as np

from facelandmark import geometry
from pipeline import reader
from pipeline import records
from pipeline import sources
from pipeline import synthetic
from pipeline import views


@dataclasses.dataclass
class Sample:
  """One image and the annotated faces on it."""
  image: np.ndarray      # uint8 RGB [H, W, 3]
  boxes: np.ndarray      # [K, 4] the boxes the model is given
  landmarks: np.ndarray  # [K, 68, 2] ground truth, corner coordinates
  subset: str
  source: str


def is_prepared(data_dir):
  return os.path.isfile(os.path.join(data_dir, records.MANIFEST))


def shard_samples(data_dir, split, box='landmarks', batch_size=64):
  """One Sample per stored face crop of a prepared dataset."""
  dataset = reader.make_dataset(data_dir, split, batch_size, training=False)
  with reader.naming_corrupt_shards(data_dir, split):
    for batch in dataset:
      boxes = np.asarray(views.face_boxes(batch['landmarks'], batch['box'],
                                          box), np.float64)
      batch = {k: v.numpy() for k, v in batch.items()}
      for i in range(len(batch['image'])):
        yield Sample(batch['image'][i], boxes[i][None],
                     batch['landmarks'][i].astype(np.float64)[None],
                     batch['subset'][i].decode(),
                     f'{batch["source"][i].decode()}#{batch["face_index"][i]}')


def folder_samples(data_dir, split='all', layout='auto', box='landmarks',
                   log=print):
  """One Sample per image of a raw 300-W folder; skips unreadable images.

  With `split` all or train, says which of the photos are in the folder's
  train split: a model prepared from the folder trained on them.
  """
  dataset = sources.load(data_dir, layout)
  faces = {'all': dataset.train + dataset.val, 'train': dataset.train,
           'val': dataset.val}.get(split)
  if faces is None:
    raise ValueError(f'--split for a raw folder: all, train or val; got '
                     f'{split!r}')
  trained = sorted({f.rel_path for f in dataset.train})
  if split != 'val' and trained:
    log(f'Warning: {len(trained)} of these photos are in the train split '
        f'that `pipeline.prepare` makes of {data_dir}, which a model prepared '
        f'from it trained on: {", ".join(trained[:5])}'
        f'{f" and {len(trained) - 5} more" if len(trained) > 5 else ""}; '
        '--split=val leaves them out.')
  by_image = {}
  for face in faces:
    by_image.setdefault(face.image_path, []).append(face)
  for path, image_faces in sorted(by_image.items()):
    try:
      image = sources.read_image(path)
    except sources.BadImage as e:
      log(f'Skipped {path}: {e}')
      continue
    landmarks = np.array([f.landmarks for f in image_faces])
    boxes = np.asarray(views.face_boxes(
        landmarks, np.array([f.box for f in image_faces]), box))
    yield Sample(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), boxes, landmarks,
                 image_faces[0].subset, image_faces[0].rel_path)


def synthetic_samples(count, seed=0, size=192):
  """Generated one-face images, for a comparison when no data is given."""
  for i in range(count):
    bgr, (landmarks,) = synthetic.render_image(np.random.default_rng([seed, i]),
                                               size, size, 1)
    yield Sample(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
                 geometry.landmark_box(landmarks)[None], landmarks[None],
                 'synthetic', f'synthetic/{i}')
