"""tf.data input: batches of decoded faces from the prepared shards.

The pipeline only reads, decodes and batches: augmentation runs batched inside
the compiled train step (augment.py), where it can use the accelerator.
"""

import json
import os

import tensorflow as tf

from pipeline import records



def read_manifest(data_dir):
  """The dataset's manifest.json, checked against this code's schema."""
  path = os.path.join(data_dir, records.MANIFEST)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f'{data_dir}: no {records.MANIFEST}: not a prepared dataset or an '
        'interrupted `python -m pipeline.prepare` run')
  with tf.io.gfile.GFile(path) as f:
    manifest = json.load(f)
  version = manifest.get('schema_version')
  if version != records.SCHEMA_VERSION:
    raise ValueError(
        f'{path}: schema_version {version!r}, but this code reads version '
        f'{records.SCHEMA_VERSION}: prepare the dataset again with '
        '`python -m pipeline.prepare`')
  if not isinstance(manifest.get('image_size'), int):
    raise ValueError(f'{path}: no integer image_size')
  return manifest


def shard_files(data_dir, split):
  """The split's shard files, sorted; an error if there are none."""
  pattern = records.shard_pattern(data_dir, split)
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise FileNotFoundError(f'no shards for split {split!r}: nothing matches '
                            f'{pattern}')
  return files


def make_dataset(data_dir, split, batch_size, *, training, seed=None,
                 deterministic=False, drop_remainder=None, shuffle_buffer=1024,
                 cycle_length=8, input_context=None):
  """Batches of faces from `data_dir`'s `split` shards.

  Each batch is records.parse_face's dict, batched: image uint8 [B, S, S, 3]
  (S from the manifest), landmarks float32 [B, 68, 2], box and crop float32
  [B, 4], source and subset string [B], face_index int64 [B].

  Args:
    data_dir: a folder prepared by `python -m pipeline.prepare`.
    split: shard prefix, e.g. 'train' or 'val'.
    batch_size: the global batch size (per replica with `input_context`).
    training: True: shuffled files and records, repeated forever, full batches.
      False: one pass in file order, the last batch may be smaller.
    seed: seeds the shuffles.
    deterministic: the same batches on every run with the same seed (slower:
      parallel reads and decodes keep their order).
    drop_remainder: defaults to `training`.
    shuffle_buffer: records held for shuffling (serialized, so small).
    cycle_length: shard files read at once when training.
    input_context: a tf.distribute.InputContext (from
      strategy.distribute_datasets_from_function): this input pipeline then
      reads its share of the files (or of every file's records when there are
      fewer files than pipelines) and batches per replica.

  Returns:
    A tf.data.Dataset of dict batches.
  """
  if training and deterministic and seed is None:
    raise ValueError('deterministic=True needs a seed')
  image_size = read_manifest(data_dir)['image_size']
  files = shard_files(data_dir, split)
  read = tf.data.TFRecordDataset
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(batch_size)
    files, read = _pipeline_share(files, input_context)
  if drop_remainder is None:
    drop_remainder = training

  dataset = tf.data.Dataset.from_tensor_slices(files)
  if training:
    dataset = dataset.shuffle(len(files), seed=seed).repeat()
    dataset = dataset.interleave(
        read, cycle_length=min(cycle_length, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE)
    # Shuffled before decoding: serialized JPEGs take a tenth of the memory.
    dataset = dataset.shuffle(shuffle_buffer, seed=seed)
  else:
    dataset = dataset.flat_map(read)

  def parse(serialized):
    face = records.parse_face(serialized)
    face['image'] = tf.ensure_shape(face['image'], [image_size, image_size, 3])
    return face

  dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
  dataset = dataset.prefetch(tf.data.AUTOTUNE)
  options = tf.data.Options()
  # Evaluation keeps file order; training may trade order for speed.
  options.deterministic = deterministic or not training
  return dataset.with_options(options)


def _pipeline_share(files, input_context):
  """This input pipeline's files and the function that reads one of them."""
  count = input_context.num_input_pipelines
  index = input_context.input_pipeline_id
  if len(files) >= count:
    return files[index::count], tf.data.TFRecordDataset
  # Too few files to share out: every pipeline reads them all and keeps every
  # `count`-th record of each, which stays disjoint whatever the read order.
  return files, lambda f: tf.data.TFRecordDataset(f).shard(count, index)
