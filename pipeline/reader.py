"""tf.data input: batches of decoded faces from the prepared shards.

The pipeline only reads, decodes and batches: augmentation runs batched inside
the compiled train step (augment.py), where it can use the accelerator.

A dataset is exactly the shards its manifest names: a stray file that looks
like a shard is not read, and a missing one is an error. A corrupt shard shows
up as a tf.errors.DataLossError that names no file; `naming_corrupt_shards`
turns it into a CorruptShard error that does.

Training can cache the decoded faces (`cache`), in memory or in files
(face_cache.py), so that later epochs decode no JPEG: the CPU then keeps up
with a GPU.
"""

import contextlib
import json
import os

from absl import logging
import tensorflow as tf

from pipeline import face_cache
from pipeline import records
from pipeline import sources


MEMORY_CACHE = 'memory'
# What a decoded face holds beside its pixels: landmarks (544 bytes), boxes,
# index, source and subset strings, tf.data's bookkeeping. A round upper bound.
_FACE_EXTRA_BYTES = 1024


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


def memory_cache_bytes(manifest, split):
  """Bytes that `split`'s decoded faces take in an in-memory cache."""
  return split_size(manifest, split) * (3 * manifest['image_size']**2 +
                                        _FACE_EXTRA_BYTES)


def available_memory():
  """Bytes this process can still take: the kernel's MemAvailable (free plus
  reclaimable page cache), or all physical memory where there is no
  /proc/meminfo; capped by a cgroup v2 limit, which a container's meminfo does
  not show."""
  try:
    with open('/proc/meminfo', encoding='ascii') as f:
      available = next(int(line.split()[1]) * 1024 for line in f
                       if line.startswith('MemAvailable:'))
  except (OSError, StopIteration):
    available = os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
  try:
    with open('/sys/fs/cgroup/memory.max', encoding='ascii') as limit, open(
        '/sys/fs/cgroup/memory.current', encoding='ascii') as used:
      cap = limit.read().strip()
      if cap != 'max':
        available = min(available, int(cap) - int(used.read()))
  except OSError:
    pass
  return available


def check_cache(manifests, split, cache):
  """Refuses a `cache` for `split` of these manifests (one per folder read)
  that cannot work, naming --cache.

  An in-memory cache must fit in available memory (every folder's whole
  split: each input pipeline caches its share, all of it on one machine); a
  file cache needs a folder, not a file.
  """
  if cache == MEMORY_CACHE:
    needed = sum(memory_cache_bytes(m, split) for m in manifests)
    available = available_memory()
    if needed > available:
      total = sum(split_size(m, split) for m in manifests)
      sizes = ' + '.join(f'{split_size(m, split)} x {m["image_size"]}x'
                         f'{m["image_size"]}x3' for m in manifests)
      raise ValueError(
          f'--cache={MEMORY_CACHE}: the {total} decoded {split} faces '
          f'({sizes}) need '
          f'{needed:,} bytes ({needed / 2**30:.1f} GiB) but {available:,} '
          f'bytes ({available / 2**30:.1f} GiB) are available; use '
          '--cache=FOLDER (a file cache on a fast local disk) or no --cache')
  elif cache and tf.io.gfile.exists(cache) and not tf.io.gfile.isdir(cache):
    raise ValueError(f'--cache={cache}: a file; a file cache needs a folder')


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
                 cycle_length=8, input_context=None, cache='', mix=(),
                 log=logging.info):
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
    shuffle_buffer: records held for shuffling (serialized, so small; with a
      file cache also that many decoded faces).
    cycle_length: shard files read at once when training.
    input_context: a tf.distribute.InputContext (from
      strategy.distribute_datasets_from_function): this input pipeline then
      reads its share of the files (or of every file's records when there are
      fewer files than pipelines) and batches per replica.
    cache: training only. '' decodes every face every epoch.
      'memory' (MEMORY_CACHE; check_cache says whether it fits): one shuffled
      pass is decoded into memory, then the whole split is reshuffled
      uniformly every epoch (the buffer refers to the cached tensors, copying
      none; the first batch waits for the whole pass). Any other value is a
      local folder for the file cache (face_cache.py: created; the shards'
      decoded copies are built before the first batch, or found from an
      earlier or concurrent run), read in the same seeded order as the
      shards would be (`shuffle_buffer` then holds decoded faces).
    mix: training only: (folder, fraction) pairs of other prepared folders
      with the same image size; each face of a batch comes from a folder's
      `split` with that probability, else from `data_dir` (an epoch of one
      folder is no epoch of another: each repeats on its own).
    log: where the file cache says what it builds or cleans up.

  Returns:
    A tf.data.Dataset of dict batches. Iterate it inside
    `naming_corrupt_shards(data_dir, split)` (and each mixed folder's) to have
    a corrupt shard named.

  Raises:
    sources.DataError: a manifest is unusable, has no faces in `split` (see
      `has_split`) or a mixed folder's image size differs.
    FileNotFoundError: no manifest, or a shard it names is missing.
    ValueError: see check_cache and read_manifests.
  """
  if training and deterministic and seed is None:
    raise ValueError('deterministic=True needs a seed')
  if cache and not training:
    raise ValueError('cache is for training: evaluation reads once')
  if mix and not training:
    raise ValueError('mix is for training: evaluation reads one folder')
  manifests = read_manifests(data_dir, split, mix)
  folders = [data_dir] + [folder for folder, _ in mix]
  check_cache(manifests, split, cache)
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(batch_size)
  if drop_remainder is None:
    drop_remainder = training
  faces = [_faces(folder, manifest, split, training=training, seed=seed,
                  shuffle_buffer=shuffle_buffer, cycle_length=cycle_length,
                  input_context=input_context, cache=cache, log=log)
           for folder, manifest in zip(folders, manifests)]
  if mix:
    weights = [1.0 - sum(f for _, f in mix)] + [f for _, f in mix]
    dataset = tf.data.Dataset.sample_from_datasets(faces, weights, seed=seed)
  else:
    dataset = faces[0]
  dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
  dataset = dataset.prefetch(tf.data.AUTOTUNE)
  options = tf.data.Options()
  # Evaluation keeps file order; training may trade order for speed.
  options.deterministic = deterministic or not training
  return dataset.with_options(options)


def read_manifests(data_dir, split, mix=()):
  """The manifests of `data_dir` and of make_dataset's `mix` folders, checked
  to be mixed: fractions that leave `data_dir` a share, one image size, and
  faces in `split` in every mixed folder."""
  fractions = [f for _, f in mix]
  if not all(0.0 < f < 1.0 for f in fractions) or sum(fractions) >= 1.0:
    raise ValueError(f'mix fractions must each be in (0, 1) and sum below 1, '
                     f'got {fractions}')
  manifests = [read_manifest(data_dir)]
  for folder, _ in mix:
    manifest = read_manifest(folder)
    size, expected = manifest['image_size'], manifests[0]['image_size']
    if size != expected:
      raise sources.DataError(
          f'{folder}: image_size {size} but {data_dir} has {expected}: '
          'prepare both with the same --image_size to mix them')
    shard_files(folder, split, manifest)
    manifests.append(manifest)
  return manifests


def _faces(data_dir, manifest, split, *, training, seed, shuffle_buffer,
           cycle_length, input_context, cache, log):
  """One folder's decoded faces, unbatched (see make_dataset)."""
  image_size = manifest['image_size']
  files = shard_files(data_dir, split, manifest)
  read = tf.data.TFRecordDataset
  if input_context is not None:
    files, read = _pipeline_share(files, input_context)
  parse_record = records.parse_face
  if cache and cache != MEMORY_CACHE:
    # The shards' decoded copies, one for one: read below exactly as the
    # shards would be, so the order stays the seed's, epoch by epoch.
    files = face_cache.entries(cache, files, image_size, log)
    parse_record = face_cache.parse

  dataset = tf.data.Dataset.from_tensor_slices(files)
  if training:
    dataset = dataset.shuffle(len(files), seed=seed)
    if cache != MEMORY_CACHE:  # That takes one finite pass and repeats it.
      dataset = dataset.repeat()
    dataset = dataset.interleave(
        read, cycle_length=min(cycle_length, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE)
    # Shuffled before parsing: serialized JPEGs take a tenth of the memory
    # (file cache entries hold pixels: as much as decoded faces).
    dataset = dataset.shuffle(shuffle_buffer, seed=seed)
  else:
    dataset = dataset.flat_map(read)

  def parse(serialized):
    face = parse_record(serialized)
    face['image'] = tf.ensure_shape(face['image'], [image_size, image_size, 3])
    return face

  dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
  if cache == MEMORY_CACHE:  # Reshuffled each epoch (reshuffle_each_iteration).
    dataset = dataset.cache().shuffle(split_size(manifest, split),
                                      seed=seed).repeat()
  return dataset


def _pipeline_share(files, input_context):
  """This input pipeline's files and the function that reads one of them."""
  count = input_context.num_input_pipelines
  index = input_context.input_pipeline_id
  if len(files) >= count:
    return files[index::count], tf.data.TFRecordDataset
  # Too few files to share out: every pipeline reads them all and keeps every
  # `count`-th record of each, which stays disjoint whatever the read order.
  return files, lambda f: tf.data.TFRecordDataset(f).shard(count, index)
