"""Data path speed: conversion, and the input pipeline beside the prototype's.

  python -m bench.bench_pipeline --data_dir=../shared/data/300w-sample

Prints faces/s of `pipeline.prepare` in both layouts, then images/s of
  - this project's input: TFRecord shards -> tf.data (read, decode, shuffle,
    batch) -> batched in-graph augmentation;
  - the prototype's: one gzip pickle of the same crops, loaded, then per-image
    cv2.warpAffine augmentation in a Python loop;
  - the training step (fixed batch), i.e. what training consumes;
all on the same faces, input size and batch, in one run.
"""

import os
import tempfile
import time

from absl import app
from absl import flags

from bench import prototype
from bench import timing
from pipeline import prepare

FLAGS = flags.FLAGS
flags.DEFINE_string('data_dir', '../shared/data/300w-sample',
                    'A 300-W folder holding both labels.xml and .pts files.')
flags.DEFINE_string('work_dir', None, 'Scratch folder (default: a temp dir).')
flags.DEFINE_integer('input_size', 112, 'Network input size.')
flags.DEFINE_integer('image_size', 192, 'Stored crop size.')
flags.DEFINE_integer('batch_size', 16, 'Batch size.')
flags.DEFINE_integer('batches', 200, 'Timed batches for the input paths.')
flags.DEFINE_integer('steps', 40, 'Timed training steps.')
flags.DEFINE_integer('num_workers', None, 'prepare processes (default: cores).')


def main(argv):
  del argv
  work = FLAGS.work_dir or tempfile.mkdtemp(prefix='bench_pipeline_')
  os.makedirs(work, exist_ok=True)
  prep_rows = []
  for layout in ('pts', 'xml'):
    out = os.path.join(work, f'shards_{layout}')
    start = time.perf_counter()
    manifest = prepare.prepare(
        FLAGS.data_dir, out, layout=layout, image_size=FLAGS.image_size,
        overwrite=True, num_workers=FLAGS.num_workers, progress=False)
    seconds = time.perf_counter() - start
    faces = sum(manifest['splits'][s]['faces'] for s in ('train', 'val'))
    prep_rows.append((layout, faces, seconds))
  shards = os.path.join(work, 'shards_pts')

  pickle_path = os.path.join(work, 'faces.pkl.gz')
  prototype.pickle_crops(shards, 'train', pickle_path)
  start = time.perf_counter()
  faces = prototype.load_pickle(pickle_path)
  load_seconds = time.perf_counter() - start

  ours = timing.our_input(shards, FLAGS.input_size, FLAGS.batch_size,
                          FLAGS.batches)
  theirs = timing.prototype_input(faces, FLAGS.input_size, FLAGS.batch_size,
                                  FLAGS.batches)
  step = timing.train_step(shards, os.path.join(work, 'step'),
                           FLAGS.input_size, FLAGS.batch_size, FLAGS.steps)

  print(f'\nprepare ({os.cpu_count()} cores, stored size {FLAGS.image_size}, '
        'includes reading annotations and writing shards):')
  print('| layout | faces | seconds | faces/s |')
  print('|--------|-------|---------|---------|')
  for layout, count, seconds in prep_rows:
    print(f'| {layout:6} | {count:5d} | {seconds:7.2f} | {count / seconds:7.0f} |')

  print(f'\nInput paths, {len(faces)} training faces, input {FLAGS.input_size} '
        f'px, batch {FLAGS.batch_size}:')
  print(f'| {"what":58} | images/s | vs step |')
  print(f'|{"-" * 60}|----------|---------|')
  for name, value in (
      ('this pipeline: shards, tf.data, in-graph augmentation', ours),
      ('prototype: gzip pickle, per-image cv2.warpAffine loop', theirs),
      ('training step consumes (fixed batch, compiled step)', step)):
    print(f'| {name:58} | {value:8.0f} | {value / step:6.1f}x |')
  print(f'prototype pickle load (once per run): {load_seconds:.2f} s')
  print(f'this pipeline vs prototype: {ours / theirs:.1f}x; '
        f'vs training step: {ours / step:.1f}x')


if __name__ == '__main__':
  app.run(main)
