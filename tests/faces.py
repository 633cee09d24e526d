"""Generated faces for the tests: images, prepared shards, a tiny trained net.

The session-wide tiny export built from these is the `tiny_export` fixture in
conftest.py.
"""

import dataclasses
import os

import cv2
import numpy as np

from pipeline import prepare
from pipeline import synthetic
from training import config
from training import loop

INPUT_SIZE = 64
TEST_SUBSETS = ('afw', 'helen/testset', 'lfpw/testset', 'ibug')


def face_image(seed=0, width=160, height=128, faces=2):
  """An RGB image of generated faces and their [K, 68, 2] landmarks."""
  bgr, landmarks = synthetic.render_image(np.random.default_rng(seed), width,
                                          height, faces)
  return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.array(landmarks)


def make_faces(root, num_images=16, subsets=synthetic.SUBSETS, layout='pts',
               num_shards=1, val_fraction=0.3, num_workers=1):
  """Generated 300-W style folder and its prepared shards: (raw, shards)."""
  raw, shards = os.path.join(root, 'raw'), os.path.join(root, 'shards')
  synthetic.write_dataset(raw, num_images, layout=layout, seed=1,
                          subsets=subsets)
  prepare.prepare(raw, shards, num_shards=num_shards,
                  val_fraction=val_fraction, image_size=96,
                  num_workers=num_workers, progress=False)
  return raw, shards


def train_tiny(data_dir, workdir, steps=20, **overrides):
  """A workdir trained a few steps: outputs depend on the input, a little."""
  cfg = config.TrainConfig(
      data_dir=data_dir, workdir=workdir, batch_size=8, train_steps=steps,
      lr_boundaries=(1000,), lr_values=(2e-3, 1e-3), input_size=INPUT_SIZE,
      alpha=0.35, head_width=32, bn_momentum=0.9, eval_every=steps,
      checkpoint_every=steps, log_every=steps, eval_batch_size=16,
      num_summary_images=1, max_rotation=10.0, min_scale=0.9)
  cfg = dataclasses.replace(cfg, **overrides)
  loop.train(cfg, log=lambda *_: None)
  return workdir
