"""Input for a GPU: the decoded-face cache, and several steps per call.

  python -m bench.bench_input --data_dir=../shared/data/300w-sample

Prints, for the train split of prepared shards (prepared here from --data_dir
unless --shards is given):
1. the host-side input rate, images/s of reader.make_dataset without
   augmentation (that runs in the step, on the accelerator), with no cache, the
   in-memory cache and a file cache: in the first epoch (which fills the
   cache) and after it; beside what the compiled train step consumes;
2. the time per step of a tiny model on a fixed batch, one step per compiled
   call beside several (--steps_per_loop), and the cost of a call that runs
   no step: the per-call overhead that several steps per call share out.
"""

import os
import shutil
import tempfile
import time

from absl import app
from absl import flags
import tensorflow as tf

from bench import timing
from pipeline import prepare
from pipeline import reader
from training import loop

FLAGS = flags.FLAGS
flags.DEFINE_string('data_dir', '../shared/data/300w-sample',
                    'A 300-W folder (either layout), prepared once here.')
flags.DEFINE_string('shards', None, 'Already prepared shards (skips prepare).')
flags.DEFINE_string('work_dir', None, 'Where the scratch folder goes (default: '
                    'the system temp dir).')
flags.DEFINE_integer('image_size', 192, 'Stored crop size when preparing.')
flags.DEFINE_integer('input_size', 112, 'Network input size of the step whose '
                     'demand the input is compared with.')
flags.DEFINE_integer('batch_size', 16, 'Batch size.')
flags.DEFINE_integer('batches', 200, 'Input batches timed after the first '
                     'epoch.')
flags.DEFINE_integer('steps', 20, 'Timed train steps (demand).')
flags.DEFINE_integer('steps_per_loop', 8, 'Steps per call compared with 1.')
flags.DEFINE_integer('overhead_steps', 64, 'Timed steps of the tiny model '
                     'per round and steps per call.')
flags.DEFINE_integer('rounds', 5, 'Rounds of the tiny model timing.')


def input_rates(shards, cache, faces):
  """Images/s over the first epoch and over --batches batches after it."""
  stream = iter(reader.make_dataset(shards, 'train', FLAGS.batch_size,
                                    training=True, seed=0, cache=cache))
  rates = []
  for batches in (max(1, faces // FLAGS.batch_size), FLAGS.batches):
    start = time.perf_counter()
    for _ in range(batches):
      next(stream)
    rates.append(batches * FLAGS.batch_size / (time.perf_counter() - start))
  return rates


def seconds_per_call(shards, work):
  """Seconds per call of a tiny model's train step on a fixed batch, by steps
  per call: 0 (the call alone), 1 and --steps_per_loop. Rounds take turns
  and the best of each is kept: other work on the machine only slows a round
  down, and turns spread its ups and downs over every count."""
  trainer = loop.Trainer(timing.bench_config(
      shards, work, 64, FLAGS.batch_size, 1, alpha=0.35, head_width=64))
  batch = next(iter(trainer._train_dataset()))  # pylint: disable=protected-access
  fixed = iter(tf.data.Dataset.from_tensors(batch).repeat())
  train_step = trainer._train_step  # pylint: disable=protected-access
  float(train_step(fixed, 2)[0])  # The one trace for every count; warm-up.
  seconds = {n: float('inf') for n in (0, 1, FLAGS.steps_per_loop)}
  for _ in range(FLAGS.rounds):
    for steps_per_call in seconds:
      calls = FLAGS.overhead_steps // max(1, steps_per_call)
      start = time.perf_counter()
      for _ in range(calls):
        loss, _ = train_step(fixed, steps_per_call)
      float(loss)
      seconds[steps_per_call] = min(seconds[steps_per_call],
                                    (time.perf_counter() - start) / calls)
  return seconds


def print_tables(work):
  """Both tables, with scratch files (shards, file cache, workdirs) in
  `work`."""
  shards = FLAGS.shards
  if not shards:
    shards = os.path.join(work, 'shards')
    prepare.prepare(FLAGS.data_dir, shards, image_size=FLAGS.image_size,
                    overwrite=True, progress=False)
  manifest = reader.read_manifest(shards)
  faces = reader.split_size(manifest, 'train')
  size = manifest['image_size']

  demand = timing.train_step(shards, os.path.join(work, 'step'),
                             FLAGS.input_size, FLAGS.batch_size, FLAGS.steps)
  rows = []
  for name, cache in (('no cache (decode every epoch)', ''),
                      ('--cache=memory', reader.MEMORY_CACHE),
                      ('--cache=FOLDER (file cache)',
                       os.path.join(work, 'cache'))):
    first, later = input_rates(shards, cache, faces)
    rows.append((name, f'{first:.0f}', f'{later:.0f}',
                 f'{later / demand:.1f}x'))
  rows.append((f'train step consumes ({FLAGS.input_size} px, fixed batch)',
               '', f'{demand:.0f}', '1.0x'))
  print()
  print(timing.table(
      f'Host input without augmentation, train split: {faces} faces of '
      f'{size}x{size}, batch {FLAGS.batch_size}, {os.cpu_count()} cores '
      f'(memory cache {reader.memory_cache_bytes(manifest, "train"):,} bytes '
      f'of {reader.available_memory():,} available)',
      ['input', 'first epoch img/s', 'after it img/s', 'vs step'], rows))

  seconds = seconds_per_call(shards, os.path.join(work, 'tiny'))
  call = seconds.pop(0)
  print()
  print(timing.table(
      f'Steps per compiled call: alpha 0.35, 64 px, batch {FLAGS.batch_size}, '
      'fixed batch',
      ['steps per call', 'ms per call', 'ms per step', 'images/s'],
      [('0 (the call alone)', f'{1e3 * call:.2f}', '', '')] +
      [(str(n), f'{1e3 * s:.2f}', f'{1e3 * s / n:.2f}',
        f'{FLAGS.batch_size * n / s:.0f}') for n, s in seconds.items()]))
  n = FLAGS.steps_per_loop
  print(f'Overhead per step: {1e3 * call:.2f} ms with 1 step per call, '
        f'{1e3 * call / n:.2f} ms with {n} (measured difference: '
        f'{1e3 * (seconds[1] - seconds[n] / n):.2f} ms)')



def main(argv):
  del argv
  if FLAGS.work_dir:
    os.makedirs(FLAGS.work_dir, exist_ok=True)
  work = tempfile.mkdtemp(prefix='bench_input_', dir=FLAGS.work_dir)
  try:
    print_tables(work)
  finally:
    shutil.rmtree(work)  # The decoded file cache alone is ~100 MB.


if __name__ == '__main__':
  app.run(main)
