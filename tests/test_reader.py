"""tf.data batches from generated shards: shapes, order, determinism, errors."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from facelandmark import geometry
from pipeline import face_cache
from pipeline import reader
from pipeline import records
from pipeline import sources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32
# Faces per shard file, by split.
SHARDS = {'train': (5, 5, 5), 'val': (4, 3)}


def _write_dataset(root, shards=None, schema_version=records.SCHEMA_VERSION):
  """Shards of random faces (face_index counts up in file order), a manifest."""
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  face_index = 0
  splits = {}
  for split, counts in (shards or SHARDS).items():
    names = [records.shard_name(split, i, len(counts))
             for i in range(len(counts))]
    splits[split] = {'faces': sum(counts), 'shards': names}
    for name, count in zip(names, counts):
      path = root / name
      with tf.io.TFRecordWriter(str(path)) as writer:
        for _ in range(count):
          image = rng.integers(0, 256, [SIZE, SIZE, 3], np.uint8)
          landmarks = rng.uniform(2, SIZE - 2, [geometry.NUM_LANDMARKS, 2])
          writer.write(records.serialize_face(
              cv2.imencode('.jpg', image)[1].tobytes(), SIZE, landmarks,
              geometry.landmark_box(landmarks), [10, 20, 60, 70], 'generated',
              split, face_index))
          face_index += 1
  manifest = {'schema_version': schema_version, 'image_size': SIZE,
              'data_dir': '/data/300w', 'splits': splits}
  (root / records.MANIFEST).write_text(json.dumps(manifest))
  return str(root)


def _face_indices(dataset, batches=None):
  return [b['face_index'].numpy().tolist() for b in dataset.take(batches or -1)]


def test_training_batches_have_static_shapes_types_and_ranges(tmp_path):
  dataset = reader.make_dataset(_write_dataset(tmp_path), 'train', 4,
                                training=True, seed=0)
  spec = dataset.element_spec
  assert spec['image'].shape == [4, SIZE, SIZE, 3]
  assert spec['image'].dtype == tf.uint8
  assert spec['landmarks'].shape == [4, 68, 2]
  assert spec['landmarks'].dtype == tf.float32
  assert spec['box'].shape == spec['crop'].shape == [4, 4]
  assert spec['source'].dtype == spec['subset'].dtype == tf.string
  assert spec['face_index'].dtype == tf.int64
  # 6 batches of 4 from 15 faces: the dataset repeats.
  for batch in dataset.take(6):
    landmarks = batch['landmarks'].numpy()
    assert ((landmarks >= 0) & (landmarks <= SIZE)).all()
    assert set(batch['face_index'].numpy()) <= set(range(15))
    assert set(batch['subset'].numpy()) == {b'train'}


def test_deterministic_mode_repeats_batches(tmp_path):
  data_dir = _write_dataset(tmp_path)

  def batches(seed):
    return list(reader.make_dataset(data_dir, 'train', 4, training=True,
                                    seed=seed, deterministic=True).take(6))

  first, second = batches(7), batches(7)
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a['face_index'], b['face_index'])
    np.testing.assert_array_equal(a['image'], b['image'])
  other = batches(8)
  assert ([b['face_index'].numpy().tolist() for b in first] !=
          [b['face_index'].numpy().tolist() for b in other])


def test_evaluation_reads_every_face_once_in_file_order(tmp_path):
  dataset = reader.make_dataset(_write_dataset(tmp_path), 'train', 4,
                                training=False)
  assert _face_indices(dataset) == [[0, 1, 2, 3], [4, 5, 6, 7],
                                    [8, 9, 10, 11], [12, 13, 14]]


@pytest.mark.parametrize('split,pipelines', [
    ('train', 2),  # 3 files over 2 pipelines: shared out by file.
    ('val', 3),  # 2 files over 3 pipelines: shared out by record.
])
def test_input_pipelines_share_the_faces_out(tmp_path, split, pipelines):
  data_dir = _write_dataset(tmp_path)
  seen = []
  for index in range(pipelines):
    context = tf.distribute.InputContext(
        num_input_pipelines=pipelines, input_pipeline_id=index,
        num_replicas_in_sync=pipelines)
    dataset = reader.make_dataset(data_dir, split, 2 * pipelines,
                                  training=False, input_context=context)
    batches = _face_indices(dataset)
    assert max(len(b) for b in batches) == 2  # Per replica.
    seen += sum(batches, [])
    train = reader.make_dataset(data_dir, split, 2 * pipelines, training=True,
                                seed=0, input_context=context)
    assert train.element_spec['image'].shape[0] == 2
  first, count = {'train': (0, 15), 'val': (15, 7)}[split]
  assert sorted(seen) == list(range(first, first + count))


def test_missing_manifest_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='no manifest.json.*prepare'):
    reader.make_dataset(str(tmp_path), 'train', 4, training=False)


def test_wrong_schema_version_is_a_clear_error(tmp_path):
  data_dir = _write_dataset(tmp_path, shards={'train': (1,)}, schema_version=0)
  with pytest.raises(ValueError, match='schema_version 0'):
    reader.read_manifest(data_dir)


def test_split_without_shards_is_a_clear_error(tmp_path):
  # prepare --val_fraction=0 writes a val split of no faces and no shards.
  data_dir = _write_dataset(tmp_path, shards={'train': (1,), 'val': ()})
  assert reader.has_split(data_dir, 'train')
  assert not reader.has_split(data_dir, 'val')
  assert not reader.has_split(data_dir, 'test')
  manifest = reader.read_manifest(data_dir)
  assert [reader.split_size(manifest, s) for s in ('train', 'val')] == [1, 0]
  for split in ('val', 'test'):
    with pytest.raises(sources.DataError,
                       match=f"no faces in split '{split}' of "
                             f'{re.escape(data_dir)}'):
      reader.make_dataset(data_dir, split, 4, training=False)


def test_reads_exactly_the_shards_the_manifest_names(tmp_path):
  data_dir = _write_dataset(tmp_path)
  # A stray file matching the shard pattern is not part of the dataset.
  shutil.copy(tmp_path / records.shard_name('val', 0, 2),
              tmp_path / records.shard_name('train', 7, 9))
  dataset = reader.make_dataset(data_dir, 'train', 8, training=False)
  assert sum(_face_indices(dataset), []) == list(range(15))
  missing = records.shard_name('train', 1, 3)
  os.remove(tmp_path / missing)
  with pytest.raises(FileNotFoundError,
                     match=f'are missing: .*{missing}; rebuild .*'
                           f'--output_dir={re.escape(data_dir)} --overwrite'):
    reader.make_dataset(data_dir, 'train', 4, training=False)


@pytest.mark.parametrize('manifest, problem', [
    ('{"schema_version": 1, "image_s', 'not valid JSON'),
    (json.dumps({'schema_version': 1, 'image_size': SIZE}), 'no splits'),
    (json.dumps({'schema_version': 1, 'image_size': SIZE,
                 'splits': {'train': {'faces': 2}}}), 'no splits'),
])
def test_broken_manifest_is_a_clear_error(tmp_path, manifest, problem):
  (tmp_path / records.MANIFEST).write_text(manifest)
  with pytest.raises(sources.DataError, match=f'manifest.json: {problem}'):
    reader.read_manifest(str(tmp_path))


def _corrupt(path, how):
  data = bytearray(path.read_bytes())
  if how == 'flipped byte':
    data[len(data) // 2] ^= 0xFF
  else:
    del data[-40:]
  path.write_bytes(bytes(data))


@pytest.mark.parametrize('how', ['flipped byte', 'truncated'])
@pytest.mark.parametrize('split, training', [('train', True), ('val', False)])
def test_corrupt_shard_is_named(tmp_path, how, split, training):
  data_dir = _write_dataset(tmp_path)
  bad = tmp_path / records.shard_name(split, 1, len(SHARDS[split]))
  _corrupt(bad, how)
  assert reader.find_corrupt_shards(data_dir, split) == [str(bad)]
  with pytest.raises(reader.CorruptShard,
                     match=f'{re.escape(str(bad))}: corrupt.*--overwrite'
                     ) as raised:
    with reader.naming_corrupt_shards(data_dir, 'train', 'val'):
      for _ in reader.make_dataset(data_dir, split, 4, training=training,
                                   seed=0).take(20):
        pass
  assert isinstance(raised.value.__cause__, tf.errors.DataLossError)
  assert isinstance(raised.value, sources.DataError)


def test_other_data_loss_passes_through(tmp_path):
  data_dir = _write_dataset(tmp_path)  # every shard intact
  with pytest.raises(tf.errors.DataLossError, match='checkpoint'):
    with reader.naming_corrupt_shards(data_dir, 'train'):
      raise tf.errors.DataLossError(None, None, 'corrupt checkpoint')


def test_deterministic_training_needs_a_seed(tmp_path):
  data_dir = _write_dataset(tmp_path, shards={'train': (1,)})
  with pytest.raises(ValueError, match='seed'):
    reader.make_dataset(data_dir, 'train', 4, training=True, deterministic=True)


def _faces_by_index(data_dir):
  """Every train face, decoded without a cache, by face_index."""
  dataset = reader.make_dataset(data_dir, 'train', 15, training=False)
  return {int(i): (image, landmarks) for batch in dataset
          for i, image, landmarks in zip(batch['face_index'].numpy(),
                                         batch['image'].numpy(),
                                         batch['landmarks'].numpy())}


def _rewrite_images(data_dir, value):
  """Rewrites every train shard in place with the same faces, all pixels
  `value`: what a reader that still reads the shards would then see."""
  manifest = reader.read_manifest(data_dir)
  for name in manifest['splits']['train']['shards']:
    path = os.path.join(data_dir, name)
    faces = list(tf.data.TFRecordDataset(path).map(records.parse_face)
                 .as_numpy_iterator())
    with tf.io.TFRecordWriter(path) as writer:
      for face in faces:
        image = np.full([SIZE, SIZE, 3], value, np.uint8)
        writer.write(records.serialize_face(
            cv2.imencode('.png', image)[1].tobytes(), SIZE, face['landmarks'],
            face['box'], face['crop'], face['source'].decode(),
            face['subset'].decode(), face['face_index']))


def _check_faces(batches, expected):
  for batch in batches:
    for i, image, landmarks in zip(batch['face_index'].numpy(),
                                   batch['image'].numpy(),
                                   batch['landmarks'].numpy()):
      np.testing.assert_array_equal(image, expected[int(i)][0])
      np.testing.assert_array_equal(landmarks, expected[int(i)][1])


def test_memory_cache_gives_the_same_faces_reshuffled_each_epoch(tmp_path):
  data_dir = _write_dataset(tmp_path)
  expected = _faces_by_index(data_dir)

  def epochs():
    batches = list(reader.make_dataset(data_dir, 'train', 5, training=True,
                                       seed=4, deterministic=True,
                                       cache=reader.MEMORY_CACHE).take(9))
    _check_faces(batches, expected)
    order = sum((b['face_index'].numpy().tolist() for b in batches), [])
    return [order[i:i + 15] for i in range(0, 45, 15)]

  first = epochs()
  # Every epoch has every face once, in a new order.
  assert all(sorted(epoch) == list(range(15)) for epoch in first)
  assert len({tuple(epoch) for epoch in first}) == 3
  assert epochs() == first  # The same seed repeats it.


def test_memory_cache_reads_the_shards_once(tmp_path):
  data_dir = _write_dataset(tmp_path)
  expected = _faces_by_index(data_dir)
  batches = iter(reader.make_dataset(data_dir, 'train', 5, training=True,
                                     seed=0, cache=reader.MEMORY_CACHE))
  _check_faces([next(batches)], expected)  # The whole first pass is read.
  _rewrite_images(data_dir, 0)
  # Ten more epochs, past anything prefetched: all from memory.
  _check_faces([next(batches) for _ in range(30)], expected)


def _order(data_dir, seed, cache='', log=None, batches=12):
  dataset = reader.make_dataset(data_dir, 'train', 5, training=True,
                                seed=seed, deterministic=True, cache=cache,
                                log=log or (lambda _: None))
  return [b['face_index'].numpy().tolist() for b in dataset.take(batches)]


def test_file_cache_keeps_the_uncached_order_of_every_seed(tmp_path):
  data_dir = _write_dataset(tmp_path / 'data')
  cache = str(tmp_path / 'cache' / 'train')  # Created on use.
  built = []
  for seed in (4, 5):
    # The known order is the one without a cache: the cache changes none of
    # it, epoch after epoch, seed after seed (on one shared cache).
    assert _order(data_dir, seed, cache, built.append) == _order(data_dir,
                                                                 seed)
  assert _order(data_dir, 4) != _order(data_dir, 5)
  assert len(built) == 3  # One line per shard, the first time only.
  assert [name.startswith(records.shard_name('train', i, 3)[:-9])
          for i, name in enumerate(sorted(os.listdir(cache)))] == [True] * 3


def test_file_cache_is_read_instead_of_the_shards(tmp_path):
  data_dir = _write_dataset(tmp_path / 'data')
  cache = str(tmp_path / 'cache')
  expected = _faces_by_index(data_dir)
  batches = iter(reader.make_dataset(data_dir, 'train', 5, training=True,
                                     seed=0, cache=cache))
  _rewrite_images(data_dir, 0)
  _check_faces([next(batches) for _ in range(30)], expected)
  # Rewritten shards are new entries: a new dataset sees their faces.
  built = []
  batch = next(iter(reader.make_dataset(data_dir, 'train', 5, training=True,
                                        seed=0, cache=cache,
                                        log=built.append)))
  assert len(built) == 3 and not batch['image'].numpy().any()
  assert len(os.listdir(cache)) == 6


def test_file_cache_entries_are_keyed_by_shard_and_size(tmp_path):
  data_dir = _write_dataset(tmp_path)
  shard = os.path.join(data_dir, records.shard_name('train', 0, 3))
  other = os.path.join(data_dir, records.shard_name('train', 1, 3))
  key = face_cache.entry_path
  assert key('c', shard, SIZE) == key('c', shard, SIZE)
  assert len({key('c', shard, SIZE), key('c', shard, SIZE + 1),
              key('c', other, SIZE)}) == 3
  before = key('c', shard, SIZE)
  with open(shard, 'ab') as f:
    f.write(b'x')
  assert key('c', shard, SIZE) != before


def _run_python(code, *args):
  return subprocess.run([sys.executable, '-c', code, *map(str, args)],
                        cwd=REPO, capture_output=True, text=True, timeout=300,
                        check=False)


# Reads 4 batches through a file cache; prints what the cache said, then
# their face indices.
_READ_SHARED = """
import sys
from pipeline import reader
dataset = reader.make_dataset(sys.argv[1], 'train', 5, training=True, seed=0,
                              deterministic=True, cache=sys.argv[2], log=print)
print([b['face_index'].numpy().tolist() for b in dataset.take(4)])
"""
# Takes the lock of the first shard's entry, writes part of it, dies as
# `kill -9` would.
_KILLED_WHILE_BUILDING = """
import os, signal, sys
from pipeline import face_cache
from pipeline import records
path = face_cache.entry_path(sys.argv[2], os.path.join(
    sys.argv[1], records.shard_name('train', 0, 3)), int(sys.argv[3]))
os.makedirs(sys.argv[2], exist_ok=True)
assert face_cache._take_lock(path + '.lock', print)
with open(f'{path}.{os.getpid()}.tmp', 'wb') as f:
  f.write(b'half an entry')
print(os.getpid(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_file_cache_survives_a_killed_run(tmp_path):
  data_dir = _write_dataset(tmp_path / 'data')
  expected = _faces_by_index(data_dir)
  cache = tmp_path / 'cache'
  killed = _run_python(_KILLED_WHILE_BUILDING, data_dir, cache, SIZE)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  pid = killed.stdout.split()[-1]
  # In a child too: were the dead lock taken for a live one, it would wait.
  resumed = _run_python(_READ_SHARED, data_dir, cache)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  stale = [line for line in resumed.stdout.splitlines() if 'stale' in line]
  assert len(stale) == 1 and f'stale lock of process {pid} ' in stale[0], (
      resumed.stdout)
  assert len(os.listdir(cache)) == 3  # Entries only: no lock, no partial.
  _check_faces(list(reader.make_dataset(data_dir, 'train', 5, training=True,
                                        seed=0, cache=str(cache)).take(6)),
               expected)




def test_two_runs_share_a_file_cache(tmp_path):
  data_dir = _write_dataset(tmp_path / 'data', shards={'train': (5,) * 8})
  cache = tmp_path / 'cache'
  runs = [subprocess.Popen([sys.executable, '-c', _READ_SHARED, data_dir,
                            str(cache)], cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
          for _ in range(2)]
  outputs = [run.communicate(timeout=300) for run in runs]
  for run, (_, stderr) in zip(runs, outputs):
    assert run.returncode == 0, stderr[-2000:]
  # The order of an uncached run in a fresh process: in this one, earlier
  # tests may have set TensorFlow's global seed, which shuffling combines
  # with its own.
  uncached = subprocess.run([sys.executable, '-c', _READ_SHARED, data_dir, ''],
                            cwd=REPO, capture_output=True, text=True,
                            timeout=300, check=True)
  expected = uncached.stdout.splitlines()[-1]
  assert [out.splitlines()[-1] for out, _ in outputs] == [expected] * 2
  # Each shard was decoded once, by one run or the other.
  decoded = [line for out, _ in outputs for line in out.splitlines()
             if line.startswith('Decoding')]
  assert len(decoded) == 8, outputs
  assert len(os.listdir(cache)) == 8


def test_memory_cache_larger_than_memory_is_refused(tmp_path, monkeypatch):
  data_dir = _write_dataset(tmp_path)
  monkeypatch.setattr(reader, 'available_memory', lambda: 50_000)
  needed = 15 * (SIZE * SIZE * 3 + 1024)  # 61,440 bytes
  with pytest.raises(ValueError, match=f'--cache=memory: the 15 decoded train '
                     f'faces .*need {needed:,} bytes .* but 50,000 bytes'):
    reader.make_dataset(data_dir, 'train', 4, training=True, seed=0,
                        cache=reader.MEMORY_CACHE)
  monkeypatch.setattr(reader, 'available_memory', lambda: needed)
  reader.make_dataset(data_dir, 'train', 4, training=True, seed=0,
                      cache=reader.MEMORY_CACHE)


def test_available_memory_is_a_positive_byte_count():
  assert 2**20 < reader.available_memory() < 2**50


def test_file_cache_on_a_file_is_refused(tmp_path):
  data_dir = _write_dataset(tmp_path, shards={'train': (1,)})
  with pytest.raises(ValueError, match='--cache=.*manifest.json: a file'):
    reader.check_cache([reader.read_manifest(data_dir)], 'train',
                       str(tmp_path / records.MANIFEST))


def _write_labelled(root, source, train_faces, size=SIZE):
  """A prepared folder whose faces all carry `source` (to tell folders apart)."""
  root.mkdir()
  rng = np.random.default_rng(1)
  name = records.shard_name('train', 0, 1)
  with tf.io.TFRecordWriter(str(root / name)) as writer:
    for i in range(train_faces):
      landmarks = rng.uniform(2, size - 2, [geometry.NUM_LANDMARKS, 2])
      writer.write(records.serialize_face(
          cv2.imencode('.jpg', np.zeros([size, size, 3], np.uint8))[1].tobytes(),
          size, landmarks, geometry.landmark_box(landmarks), [0, 0, size, size],
          source, 'train', i))
  (root / records.MANIFEST).write_text(json.dumps({
      'schema_version': records.SCHEMA_VERSION, 'image_size': size,
      'data_dir': str(root), 'splits': {'train': {'faces': train_faces,
                                                  'shards': [name]}}}))
  return str(root)


@pytest.mark.parametrize('cache', ['', reader.MEMORY_CACHE])
def test_mix_draws_each_folder_at_its_fraction(tmp_path, cache):
  main = _write_labelled(tmp_path / 'main', 'photos', 7)
  extra = _write_labelled(tmp_path / 'extra', 'frames', 40)
  dataset = reader.make_dataset(main, 'train', 50, training=True, seed=0,
                                cache=cache, mix=[(extra, 0.25)])
  sources_ = np.concatenate([b['source'].numpy() for b in dataset.take(40)])
  share = np.mean(sources_ == b'frames')
  # 2,000 draws at p=0.25: the standard deviation of the share is 0.0097.
  assert abs(share - 0.25) < 0.04
  # The small folder repeats on its own: all 7 faces are drawn, often.
  photos = np.concatenate([b['face_index'].numpy()[b['source'].numpy() ==
                                                   b'photos']
                           for b in dataset.take(4)])
  assert set(photos.tolist()) == set(range(7))


def test_mix_refuses_what_cannot_be_mixed(tmp_path):
  main = _write_labelled(tmp_path / 'main', 'photos', 4)
  other_size = _write_labelled(tmp_path / 'big', 'frames', 4, size=48)
  no_train = _write_dataset(tmp_path, shards={'val': (2,)})
  with pytest.raises(sources.DataError, match='big: image_size 48 but .*main '
                     'has 32: prepare both with the same --image_size'):
    reader.make_dataset(main, 'train', 4, training=True, mix=[(other_size, 0.5)])
  with pytest.raises(sources.DataError, match="no faces in split 'train'"):
    reader.make_dataset(main, 'train', 4, training=True, mix=[(no_train, 0.5)])
  with pytest.raises(ValueError, match=r'sum below 1, got \[0.6, 0.5\]'):
    reader.make_dataset(main, 'train', 4, training=True,
                        mix=[(main, 0.6), (main, 0.5)])
  with pytest.raises(ValueError, match='mix is for training'):
    reader.make_dataset(main, 'train', 4, training=False, mix=[(main, 0.5)])


def test_memory_cache_counts_every_mixed_folder(tmp_path, monkeypatch):
  main = _write_labelled(tmp_path / 'main', 'photos', 10)
  extra = _write_labelled(tmp_path / 'extra', 'frames', 10)
  one = 10 * (SIZE * SIZE * 3 + 1024)
  monkeypatch.setattr(reader, 'available_memory', lambda: one + one // 2)
  reader.make_dataset(main, 'train', 4, training=True, cache='memory')
  with pytest.raises(ValueError, match=r'the 20 decoded train faces \(10 x '
                     r'32x32x3 \+ 10 x 32x32x3\) need'):
    reader.make_dataset(main, 'train', 4, training=True, cache='memory',
                        mix=[(extra, 0.5)])
