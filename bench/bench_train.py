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

from bench import prototype
from bench import timing
from pipeline import prepare
from training import loop
from training import workdir as workdir_lib

FLAGS = flags.FLAGS
flags.DEFINE_string('data_dir', '../shared/data/300w-sample',
                    'A 300-W folder (either layout), prepared once here.')
flags.DEFINE_string('shards', None, 'Already prepared shards (skips prepare).')
flags.DEFINE_string('work_dir', None, 'Where the scratch folder goes (default: '
                    'the system temp dir).')
flags.DEFINE_integer('input_size', 112, 'Network input size.')
flags.DEFINE_integer('image_size', 192, 'Stored crop size when preparing.')
flags.DEFINE_integer('batch_size', 16, 'Batch size.')
flags.DEFINE_integer('warmup', 10, 'Untimed steps (tracing, caches).')
flags.DEFINE_integer('steps', 60, 'Timed steps per variant.')
flags.DEFINE_bool('xla', False, 'Also time --jit_compile (slow to compile on '
                  'CPU).')
flags.DEFINE_list('precisions', ['mixed_bfloat16'], 'Also time these '
                  '--precision values (bfloat16 uses AMX/AVX512-BF16 where the '
                  'CPU has them).')
flags.DEFINE_integer('memory_steps', 3000, 'Length of the compressed schedule.')
flags.DEFINE_integer('memory_input_size', 64, 'Input size for the memory run.')


def resident_mib():
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmRSS:'):
        return int(line.split()[1]) / 1024
  return float('nan')


def time_our_loop(shards, work, jit_compile=False, precision='float32'):
  total = FLAGS.warmup + FLAGS.steps
  trainer = loop.Trainer(timing.bench_config(
      shards, os.path.join(work, f'ours_xla{int(jit_compile)}_{precision}'),
      FLAGS.input_size, FLAGS.batch_size, total, jit_compile=jit_compile,
      precision=precision))
  marks = {}

  def mark(step):
    if step in (FLAGS.warmup, total):
      marks[step] = time.perf_counter()

  trainer.train(on_step=mark)
  return FLAGS.steps * FLAGS.batch_size / (marks[total] - marks[FLAGS.warmup])


def time_prototype_fit(faces):
  model = prototype.compile_like_prototype(workdir_lib.build_model(
      timing.bench_config('', '', FLAGS.input_size, FLAGS.batch_size, 1),
      log=lambda _: None))
  sequence = prototype.PrototypeSequence(faces, FLAGS.batch_size,
                                         FLAGS.input_size, 1.25)
  model.fit(sequence, epochs=1, steps_per_epoch=FLAGS.warmup, verbose=0)
  start = time.perf_counter()
  model.fit(sequence, epochs=1, steps_per_epoch=FLAGS.steps, verbose=0)
  fit = FLAGS.steps * FLAGS.batch_size / (time.perf_counter() - start)
  return fit


def memory_over_schedule(shards, work):
  steps = FLAGS.memory_steps
  boundaries = (round(steps * 50 / 120), round(steps * 90 / 120))
  trainer = loop.Trainer(timing.bench_config(
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
  if FLAGS.work_dir:
    os.makedirs(FLAGS.work_dir, exist_ok=True)
  # A fresh folder every run: a reused workdir would resume, not train.
  work = tempfile.mkdtemp(prefix='bench_train_', dir=FLAGS.work_dir)
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
  proto_fit = time_prototype_fit(faces)
  rows.append(('this loop (tf.data + in-step augmentation)', ours))
  rows.append(('prototype model.fit + PyDataset (cv2 per image)', proto_fit))
  if FLAGS.xla:
    rows.append(('this loop, --jit_compile', time_our_loop(shards, work, True)))
  for precision in FLAGS.precisions:
    rows.append((f'this loop, --precision={precision}',
                 time_our_loop(shards, work, precision=precision)))
  rows.append(('  part: compiled step alone, fixed batch', timing.train_step(
      shards, os.path.join(work, 'step'), FLAGS.input_size, FLAGS.batch_size,
      FLAGS.steps)))
  rows.append(('  part: our input + augmentation alone', timing.our_input(
      shards, FLAGS.input_size, FLAGS.batch_size, 4 * FLAGS.steps)))
  rows.append(('  part: prototype input alone', timing.prototype_input(
      faces, FLAGS.input_size, FLAGS.batch_size, FLAGS.steps)))

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
  print('| point           |  step | RSS MiB | vs warm-up | rate from here |')
  print('|-----------------|-------|---------|------------|----------------|')
  for name, step, rss, lr in memory:
    print(f'| {name:15} | {step:5d} | {rss:7.0f} | {100 * (rss / base - 1):+9.1f}% '
          f'| {lr:14.1e} |')


if __name__ == '__main__':
  app.run(main)
