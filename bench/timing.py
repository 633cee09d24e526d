"""Images/s of the input paths and of the training step, shared by the
benchmarks so each number is measured one way."""

import time

import tensorflow as tf

from bench import prototype
from pipeline import augment
from pipeline import reader
from training import config
from training import loop


def bench_config(shards, workdir, input_size, batch_size, steps, **overrides):
  """A TrainConfig that never validates, saves or logs on its own."""
  values = dict(data_dir=shards, workdir=workdir, batch_size=batch_size,
                train_steps=steps, input_size=input_size, eval_every=10**9,
                checkpoint_every=10**9, log_every=10**9, seed=0)
  values.update(overrides)
  return config.TrainConfig(**values)


def our_input(shards, input_size, batch_size, batches, warmup=5):
  """Read, decode, shuffle, batch (tf.data) and augment (compiled)."""
  cfg = bench_config(shards, '', input_size, batch_size, 1)
  aug = tf.function(lambda b, seed: augment.augment(
      b['image'], b['landmarks'], b['box'], seed, cfg.input_size,
      cfg.view_scale, cfg.augment_config()))
  stream = iter(reader.make_dataset(shards, 'train', batch_size, training=True,
                                    seed=0))
  for i in range(warmup):
    aug(next(stream), tf.constant([0, i], tf.int64))
  start = time.perf_counter()
  for i in range(batches):
    views, _ = aug(next(stream), tf.constant([1, i], tf.int64))
  views.numpy()
  return batches * batch_size / (time.perf_counter() - start)


def prototype_input(faces, input_size, batch_size, batches):
  """The prototype's per-image cv2 augmentation from the in-memory pickle."""
  sequence = prototype.PrototypeSequence(faces, batch_size, input_size,
                                         config.TrainConfig('', '').view_scale)
  start = time.perf_counter()
  for i in range(batches):
    sequence[i % len(sequence)]  # pylint: disable=pointless-statement
  return batches * batch_size / (time.perf_counter() - start)


def train_step(shards, workdir, input_size, batch_size, steps, warmup=5):
  """The compiled train step on one fixed batch: what training consumes."""
  trainer = loop.Trainer(bench_config(shards, workdir, input_size,
                                            batch_size, 1))
  batch = next(iter(trainer._train_dataset()))  # pylint: disable=protected-access
  fixed = iter(tf.data.Dataset.from_tensors(batch).repeat())
  for _ in range(warmup):
    trainer._train_step(fixed)  # pylint: disable=protected-access
  start = time.perf_counter()
  for _ in range(steps):
    loss, _ = trainer._train_step(fixed)  # pylint: disable=protected-access
  float(loss)
  return steps * batch_size / (time.perf_counter() - start)


def table(title, header, rows):
  """A plain-text table: title, header, rule, rows."""
  widths = [max(len(str(r[i])) for r in [header] + rows)
            for i in range(len(header))]

  def line(row):  # First column left-aligned, numbers right-aligned.
    return '  '.join(str(v).rjust(w) if i else str(v).ljust(w)
                     for i, (v, w) in enumerate(zip(row, widths)))

  return '\n'.join([title, line(header), line(['-' * w for w in widths])] +
                   [line(r) for r in rows])
