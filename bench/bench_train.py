"""Training throughput beside the prototype's, and memory over the schedule.

  python -m bench.bench_train --data_dir=../shared/data/300w-sample

1. Images/s for the same model and batch: this project's loop (tf.data shards,
   augmentation inside the compiled step) beside the prototype's `model.fit` on
   a `keras.utils.PyDataset` with per-image OpenCV augmentation, plus each part
   alone to show where the gain comes from.
2. Resident memory over a compressed three-phase schedule (the 50k/40k/30k
   boundaries scaled down) in one process, with the learning rate at each
   boundary.
"""

import os
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import train_loop
from bench import prototype
from pipeline import augment
from pipeline import prepare
from pipeline import reader

FLAGS = flags.FLAGS
flags.DEFINE_string('data_dir', '../shared/data/300w-sample',
                    'A 300-W folder (either layout), prepared once here.')
flags.DEFINE_string('shards', None, 'Already prepared shards (skips prepare).')
flags.DEFINE_string('work_dir', None, 'Scratch folder (default: a temp dir).')
flags.DEFINE_integer('input_size', 112, 'Network input size.')
flags.DEFINE_integer('image_size', 192, 'Stored crop size when preparing.')
flags.DEFINE_integer('batch_size', 16, 'Batch size.')
flags.DEFINE_integer('warmup', 10, 'Untimed steps (tracing, caches).')
flags.DEFINE_integer('steps', 60, 'Timed steps per variant.')
flags.DEFINE_bool('xla', False, 'Also time --jit_compile (slow to compile on '
                  'CPU).')
flags.DEFINE_integer('memory_steps', 3000, 'Length of the compressed schedule.')
flags.DEFINE_integer('memory_input_size', 64, 'Input size for the memory run.')


def resident_mib():
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmRSS:'):
        return int(line.split()[1]) / 1024
  return float('nan')


def bench_config(shards, workdir, input_size, batch_size, steps, **overrides):
  values = dict(data_dir=shards, workdir=workdir, batch_size=batch_size,
                train_steps=steps, input_size=input_size, eval_every=10**9,
                checkpoint_every=10**9, log_every=10**9, seed=0)
  values.update(overrides)
  return train_loop.TrainConfig(**values)


def time_our_loop(shards, work, jit_compile=False):
  total = FLAGS.warmup + FLAGS.steps
  trainer = train_loop.Trainer(bench_config(
      shards, os.path.join(work, f'ours_xla{int(jit_compile)}'),
      FLAGS.input_size, FLAGS.batch_size, total, jit_compile=jit_compile))
  marks = {}

  def mark(step):
    if step in (FLAGS.warmup, total):
      marks[step] = time.perf_counter()

  trainer.train(on_step=mark)
  return FLAGS.steps * FLAGS.batch_size / (marks[total] - marks[FLAGS.warmup])


def time_our_step_alone(shards, work):
  """The compiled step on one fixed batch: the ceiling the input must feed."""
  trainer = train_loop.Trainer(bench_config(
      shards, os.path.join(work, 'step'), FLAGS.input_size, FLAGS.batch_size,
      1))
  batch = next(iter(trainer._train_dataset()))  # pylint: disable=protected-access
  fixed = iter(tf.data.Dataset.from_tensors(batch).repeat())
  for _ in range(FLAGS.warmup):
    trainer._train_step(fixed)  # pylint: disable=protected-access
  start = time.perf_counter()
  for _ in range(FLAGS.steps):
    loss, _ = trainer._train_step(fixed)  # pylint: disable=protected-access
  float(loss)
  return FLAGS.steps * FLAGS.batch_size / (time.perf_counter() - start)


def time_our_input_alone(shards):
  """Read, decode, batch and augment (the in-step part, compiled alone)."""
  cfg = bench_config(shards, '', FLAGS.input_size, FLAGS.batch_size, 1)
  aug = tf.function(lambda b, seed: augment.augment(
      b['image'], b['landmarks'], b['box'], seed, cfg.input_size,
      cfg.view_scale, cfg.augment_config()))
  batches = iter(reader.make_dataset(shards, 'train', FLAGS.batch_size,
                                     training=True, seed=0))
  for i in range(FLAGS.warmup):
    aug(next(batches), tf.constant([0, i], tf.int64))
  start = time.perf_counter()
  for i in range(FLAGS.steps * 4):
    views, _ = aug(next(batches), tf.constant([0, i], tf.int64))
  views.numpy()
  return FLAGS.steps * 4 * FLAGS.batch_size / (time.perf_counter() - start)


def time_prototype(faces):
  model = prototype.compile_like_prototype(train_loop.build_model(
      bench_config('', '', FLAGS.input_size, FLAGS.batch_size, 1),
      log=lambda _: None))
  sequence = prototype.PrototypeSequence(faces, FLAGS.batch_size,
                                         FLAGS.input_size, 1.25)
  model.fit(sequence, epochs=1, steps_per_epoch=FLAGS.warmup, verbose=0)
  start = time.perf_counter()
  model.fit(sequence, epochs=1, steps_per_epoch=FLAGS.steps, verbose=0)
  fit = FLAGS.steps * FLAGS.batch_size / (time.perf_counter() - start)
  start = time.perf_counter()
  for i in range(FLAGS.steps):
    sequence[i % len(sequence)]  # pylint: disable=pointless-statement
  alone = FLAGS.steps * FLAGS.batch_size / (time.perf_counter() - start)
  return fit, alone


def memory_over_schedule(shards, work):
  steps = FLAGS.memory_steps
  boundaries = (round(steps * 50 / 120), round(steps * 90 / 120))
  trainer = train_loop.Trainer(bench_config(
      shards, os.path.join(work, 'memory'), FLAGS.memory_input_size,
      FLAGS.batch_size, steps, lr_boundaries=boundaries,
      eval_every=boundaries[0], checkpoint_every=boundaries[0]))
  warm = min(200, boundaries[0] // 2)
  marks = {warm: 'after warm-up', boundaries[0]: 'boundary 1',
           boundaries[1]: 'boundary 2', steps: 'end'}
  rows = []

  def sample(step):
    if step in marks:
      rows.append((marks[step], step, resident_mib(),
                   float(trainer.optimizer.learning_rate)))

  trainer.train(on_step=sample)
  return rows, boundaries


def main(argv):
  del argv
  work = FLAGS.work_dir or tempfile.mkdtemp(prefix='bench_train_')
  shards = FLAGS.shards
  if not shards:
    shards = os.path.join(work, 'shards')
    prepare.prepare(FLAGS.data_dir, shards, image_size=FLAGS.image_size,
                    overwrite=True)
  pickle_path = os.path.join(work, 'faces.pkl.gz')
  prototype.pickle_crops(shards, 'train', pickle_path)
  faces = prototype.load_pickle(pickle_path)

  rows = []
  ours = time_our_loop(shards, work)
  proto_fit, proto_input = time_prototype(faces)
  rows.append(('this loop (tf.data + in-step augmentation)', ours))
  rows.append(('prototype model.fit + PyDataset (cv2 per image)', proto_fit))
  if FLAGS.xla:
    rows.append(('this loop, --jit_compile', time_our_loop(shards, work, True)))
  rows.append(('  part: compiled step alone, fixed batch',
               time_our_step_alone(shards, work)))
  rows.append(('  part: our input + augmentation alone', time_our_input_alone(
      shards)))
  rows.append(('  part: prototype input alone', proto_input))

  print(f'\nTraining throughput: input {FLAGS.input_size} px, batch '
        f'{FLAGS.batch_size}, {FLAGS.steps} timed steps after {FLAGS.warmup}, '
        f'{os.cpu_count()} CPU cores')
  print(f'| {"what":50} | images/s |')
  print(f'|{"-" * 52}|----------|')
  for name, value in rows:
    print(f'| {name:50} | {value:8.1f} |')
  print(f'speed-up of this loop over the prototype: {ours / proto_fit:.2f}x')

  memory, boundaries = memory_over_schedule(shards, work)
  base = memory[0][2]
  print(f'\nResident memory over a compressed schedule ({FLAGS.memory_steps} '
        f'steps, boundaries {boundaries}, input {FLAGS.memory_input_size} px), '
        'one process:')
  print('| point           |  step | RSS MiB | vs warm-up | learning rate |')
  print('|-----------------|-------|---------|------------|---------------|')
  for name, step, rss, lr in memory:
    print(f'| {name:15} | {step:5d} | {rss:7.0f} | {100 * (rss / base - 1):+9.1f}% '
          f'| {lr:13.1e} |')


if __name__ == '__main__':
  app.run(main)
