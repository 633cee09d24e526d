"""tf.data input: batches of decoded faces from the prepared shards.

The pipeline only reads, decodes and batches: augmentation runs batched inside
the compiled train step (augment.py), where it can use the accelerator.

A dataset is exactly the shards its manifest names: a stray file that looks
like a shard is not read, and a missing one is an error. A corrupt shard shows
up as a tf.errors.DataLossError that names no file; `naming_corrupt_shards`
turns it into a CorruptShard error that does.
"""

import contextlib
import json
import os

import tensorflow as tf

from pipeline import records
from pipeline import sources


class CorruptShard(sources.DataError):
  """A shard file that cannot be read to its end: named, with the remedy."""


def read_manifest(data_dir):
  """The dataset's manifest.json, checked against this code's schema."""
  path = os.path.join(data_dir, records.MANIFEST)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f'{data_dir}: no {records.MANIFEST}: not a prepared dataset or an '
        'interrupted `python -m pipeline.prepare` run')
  with tf.io.gfile.GFile(path) as f:
    try:
      manifest = json.load(f)
    except json.JSONDecodeError as e:
      raise sources.DataError(f'{path}: not valid JSON ({e})') from e
  version = manifest.get('schema_version')
  if version != records.SCHEMA_VERSION:
    raise sources.DataError(
        f'{path}: schema_version {version!r}, but this code reads version '
        f'{records.SCHEMA_VERSION}: prepare the dataset again with '
        '`python -m pipeline.prepare`')
  if not isinstance(manifest.get('image_size'), int):
    raise sources.DataError(f'{path}: no integer image_size')
  splits = manifest.get('splits')
  if not isinstance(splits, dict) or not all(
      isinstance(s.get('faces'), int) and isinstance(s.get('shards'), list)
      for s in splits.values()):
    raise sources.DataError(f'{path}: no splits with faces and shards lists')
  return manifest


def split_size(manifest, split):
  """Faces the manifest lists in `split`; 0 for a split it does not have."""
  return manifest['splits'].get(split, {}).get('faces', 0)


def has_split(data_dir, split):
  """Whether `data_dir` has faces in `split` (no val after --val_fraction=0)."""
  return split_size(read_manifest(data_dir), split) > 0


def _rebuild_hint(data_dir, manifest):
  source = manifest.get('data_dir', 'RAW_300W_FOLDER')
  return (f'rebuild it with `python -m pipeline.prepare --data_dir={source} '
          f'--output_dir={data_dir} --overwrite`')


def _named_shards(data_dir, manifest, split):
  return [os.path.join(data_dir, name)
          for name in manifest['splits'].get(split, {}).get('shards', [])]


def shard_files(data_dir, split, manifest=None):
  """The shard files the manifest names for `split`, checked to be there.

  Raises sources.DataError if the split has no faces, FileNotFoundError if a
  named shard is missing.
  """
  if manifest is None:
    manifest = read_manifest(data_dir)
  files = _named_shards(data_dir, manifest, split)
  if not split_size(manifest, split) or not files:
    with_faces = [s for s in manifest['splits'] if split_size(manifest, s)]
    raise sources.DataError(
        f'no faces in split {split!r} of {data_dir}: only {with_faces} have '
        'faces (prepare --val_fraction=0 makes no val split; --all_to=S only '
        'split S)')
  missing = [f for f in files if not tf.io.gfile.exists(f)]
  if missing:
    raise FileNotFoundError(
        f'{len(missing)} of the {len(files)} {split} shards that '
        f'{records.MANIFEST} names are missing: {", ".join(missing)}; '
        f'{_rebuild_hint(data_dir, manifest)}')
  return files


def find_corrupt_shards(data_dir, *splits):
  """The splits' shard files that cannot be read to their end, in order."""
  manifest = read_manifest(data_dir)
  corrupt = []
  for path in (f for s in splits for f in _named_shards(data_dir, manifest, s)):
    try:
      # Reading checks every record's length and data checksums.
      tf.data.TFRecordDataset(path).reduce(0, lambda n, _: n + 1)
    except tf.errors.DataLossError:
      corrupt.append(path)
  return corrupt


@contextlib.contextmanager
def naming_corrupt_shards(data_dir, *splits):
  """Turns a DataLossError inside into CorruptShard naming the bad shards.

    with reader.naming_corrupt_shards(data_dir, 'train', 'val'):
      ...  # iterate make_dataset(data_dir, 'train' or 'val', ...)

  The named splits' shards are checked only when such an error comes; if
  they all read, it was something else (e.g. a checkpoint) and passes as is.
  """
  try:
    yield
  except tf.errors.DataLossError as e:
    corrupt = find_corrupt_shards(data_dir, *splits)
    if not corrupt:
      raise
    raise CorruptShard(
        f'{", ".join(corrupt)}: corrupt (cannot be read to its end); '
        f'{_rebuild_hint(data_dir, read_manifest(data_dir))}') from e


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
    A tf.data.Dataset of dict batches. Iterate it inside
    `naming_corrupt_shards(data_dir, split)` to have a corrupt shard named.

  Raises:
    sources.DataError: the manifest is unusable or has no faces in `split`
      (see `has_split`).
    FileNotFoundError: no manifest, or a shard it names is missing.
  """
  if training and deterministic and seed is None:
    raise ValueError('deterministic=True needs a seed')
  manifest = read_manifest(data_dir)
  image_size = manifest['image_size']
  files = shard_files(data_dir, split, manifest)
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
