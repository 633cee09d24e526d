"""Converts 300-W into sharded TFRecords of face crops.

  python -m pipeline.prepare --data_dir=300w --output_dir=data/300w

Each face becomes a square JPEG crop of `image_size` px around its face box,
`crop_context` times the box side, so that rotation and scale augmentation at
train time stay inside real pixels. Output is deterministic (same input, same
bytes), and atomic: shards are written under temporary names and renamed when
all are complete, and `manifest.json`, which readers require, is written last.
One run at a time per output folder: a run starts by deleting the temporary
files that earlier runs, killed before they could clean up, left there.
"""

import contextlib
import dataclasses
import functools
import glob
import json
import multiprocessing
import os
import time
from typing import Optional

import cv2
import numpy as np

import training.tf_logs  # pylint: disable=unused-import  # Before TensorFlow.
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order
import tqdm

from facelandmark import config_flags
from facelandmark.config_flags import option
from facelandmark import geometry
from pipeline import records
from pipeline import sources

SPLITS = sources.SPLITS


@dataclasses.dataclass(frozen=True)
class CropSpec:
  image_size: int
  crop_context: float
  jpeg_quality: int


# Cropping: pure functions of one face and its image.


def _round(v):
  return int(np.floor(v + 0.5))


def crop_square(box, crop_context):
  """The integer-bounded square [x0, y0, x1, y1] cut around a face box."""
  x0, y0, x1, _ = geometry.square_around(box, crop_context)
  side = max(1, _round(x1 - x0))
  left, top = _round(x0), _round(y0)
  return np.array([left, top, left + side, top + side], np.float64)


def cut(image, crop):
  """Pixels of integer square `crop`, black where it leaves the image."""
  left, top, right, bottom = (int(v) for v in crop)
  height, width = image.shape[:2]
  out = np.zeros((bottom - top, right - left) + image.shape[2:], image.dtype)
  x0, y0 = max(left, 0), max(top, 0)
  x1, y1 = min(right, width), min(bottom, height)
  if x1 > x0 and y1 > y0:
    out[y0 - top:y1 - top, x0 - left:x1 - left] = image[y0:y1, x0:x1]
  return out


def resize_square(patch, size):
  if patch.shape[0] == size:
    return patch
  # INTER_AREA averages when shrinking (no aliasing) but is blocky enlarging.
  interpolation = cv2.INTER_AREA if patch.shape[0] > size else cv2.INTER_LINEAR
  return cv2.resize(patch, (size, size), interpolation=interpolation)


def encode_jpeg(bgr, quality):
  # imencode takes OpenCV's BGR order and writes a standard (RGB) JPEG.
  ok, buffer = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
  if not ok:
    raise RuntimeError('JPEG encoding failed')
  return buffer.tobytes()


def crop_face(image, face, spec):
  """Encoded crop of one face with its landmarks, box and crop square."""
  crop = crop_square(face.box, spec.crop_context)
  patch = resize_square(cut(image, crop), spec.image_size)
  return {
      'jpeg': encode_jpeg(patch, spec.jpeg_quality),
      'size': spec.image_size,
      'landmarks': geometry.to_crop(face.landmarks, crop, spec.image_size),
      'box': geometry.to_crop(face.box.reshape(2, 2), crop,
                              spec.image_size).ravel(),
      'crop': crop,
  }


def process_image(faces, spec):
  """Crops of all faces of one image: per face a crop dict or a Skipped."""
  try:
    image = sources.read_image(faces[0].image_path)
  except sources.BadImage as e:
    return [sources.Skipped(f.rel_path, f.face_index, str(e)) for f in faces]
  height, width = image.shape[:2]
  results = []
  for face in faces:
    problem = sources.check_in_image(face, height, width)
    results.append(sources.Skipped(face.rel_path, face.face_index, problem)
                   if problem else crop_face(image, face, spec))
  return results


@contextlib.contextmanager
def _fork_pool(num_workers):
  """A fork Pool; workers inherit the imports and run only numpy and OpenCV.

  OpenCV's thread pool does not survive fork (a worker touching it deadlocks),
  so it is shut down while forking: workers run single-threaded, which suits
  one process per core, and the parent gets its threads back.
  """
  threads = cv2.getNumThreads()
  cv2.setNumThreads(1)
  try:
    pool = multiprocessing.get_context('fork').Pool(num_workers)
  finally:
    cv2.setNumThreads(threads)
  with pool:
    yield pool


def _by_image(faces):
  """Faces grouped per image, keeping the (rel_path, face_index) order."""
  groups = {}
  for face in faces:
    groups.setdefault(face.rel_path, []).append(face)
  return list(groups.values())


def _map_images(groups, spec, num_workers):
  """process_image over image groups, in order, in worker processes if > 1."""
  fn = functools.partial(process_image, spec=spec)
  if num_workers <= 1:
    yield from map(fn, groups)
    return
  with _fork_pool(num_workers) as pool:
    yield from pool.imap(fn, groups, chunksize=4)


# Output folder.


def _existing_output(output_dir):
  found = [p for split in SPLITS for p in
           glob.glob(records.shard_pattern(glob.escape(output_dir), split))]
  manifest = os.path.join(output_dir, records.MANIFEST)
  return sorted(found) + ([manifest] if os.path.exists(manifest) else [])


def _nearest_existing(path):
  """path, or its closest ancestor that exists (a link counts, even broken)."""
  path = os.path.abspath(path)
  while not os.path.lexists(path):
    path = os.path.dirname(path)
  return path


def _check_output(output_dir, overwrite):
  """One clear error, before any work, unless output_dir can be written."""
  # The folder and its missing parents are created in the nearest one there.
  nearest = _nearest_existing(output_dir)
  if not os.path.isdir(nearest):
    raise FileExistsError(
        f'--output_dir {output_dir}: {nearest} exists and is not a folder')
  if not os.access(nearest, os.W_OK | os.X_OK):
    raise sources.DataError(
        f'--output_dir {output_dir}: cannot write in {nearest} (no write '
        'permission or a read-only file system)')
  existing = _existing_output(output_dir) if os.path.isdir(output_dir) else []
  if existing and not overwrite:
    raise FileExistsError(
        f'--output_dir {output_dir} already holds {len(existing)} shard or '
        f'manifest files (e.g. {os.path.basename(existing[0])}); pass '
        '--overwrite to replace them')


def _temp_name(output_dir, name, pid=None):
  """Where `name` is written before its rename: hidden, per process."""
  pid = os.getpid() if pid is None else pid
  return os.path.join(output_dir, f'.{name}.tmp-{pid}')


def _remove_temp_files(output_dir):
  """Deletes shard and manifest temporary files of any process in output_dir.

  Only killed runs leave them (others delete or rename theirs): with one run
  at a time per folder, every one there is stale.
  """
  folder = glob.escape(output_dir)
  finals = [records.shard_pattern(folder, s) for s in SPLITS]
  finals.append(os.path.join(folder, records.MANIFEST))
  temps = sorted(p for final in finals
                 for p in glob.glob(_temp_name(*os.path.split(final), '*')))
  for temp in temps:
    os.remove(temp)
  if temps:
    print(f'Removed {len(temps)} temporary files left in {output_dir} by an '
          'interrupted run')


class _ShardWriters:
  """TFRecord writers per split on temporary names; `commit` renames them."""

  def __init__(self, output_dir, names):
    self.output_dir = output_dir
    self.names = [n for split in SPLITS for n in names[split]]
    self.temps = [_temp_name(output_dir, n) for n in self.names]
    writers = iter([tf.io.TFRecordWriter(t) for t in self.temps])
    self.by_split = {s: [next(writers) for _ in names[s]] for s in SPLITS}

  def write(self, split, number, serialized):
    """Writes a split's face `number`: round-robin over its shards."""
    shards = self.by_split[split]
    shards[number % len(shards)].write(serialized)

  def close(self):
    for shards in self.by_split.values():
      for writer in shards:
        writer.close()

  def discard(self):
    self.close()
    for temp in self.temps:
      if os.path.exists(temp):
        os.remove(temp)

  def commit(self):
    """Replaces the old output, manifest first, so no half state looks done."""
    self.close()
    for path in _existing_output(self.output_dir)[::-1]:  # manifest is last
      if os.path.basename(path) not in self.names:
        os.remove(path)
    for temp, name in zip(self.temps, self.names):
      os.replace(temp, os.path.join(self.output_dir, name))


def _write_json(path, data):
  temp = _temp_name(os.path.dirname(path), os.path.basename(path))
  with open(temp, 'w', encoding='utf-8') as f:
    # Strict: a NaN here would be a bug, and jq or JavaScript reject it.
    json.dump(data, f, indent=2, sort_keys=True, allow_nan=False)
    f.write('\n')
  os.replace(temp, path)


# Conversion.


def shard_names(dataset, num_shards, num_val_shards):
  """Shard file names per split; at most one shard per face, none empty."""
  # By default val shards are about as large as train shards (num_shards of
  # them when there is no train split, e.g. all_to='val').
  val_shards = num_val_shards or (
      max(1, round(num_shards * len(dataset.val) / len(dataset.train)))
      if dataset.train else num_shards)
  counts = {'train': min(num_shards, len(dataset.train)),
            'val': min(val_shards, len(dataset.val))}
  return {s: [records.shard_name(s, i, counts[s]) for i in range(counts[s])]
          for s in SPLITS}


def _write_crops(groups, results, writers, strict, bar):
  """Serializes crops in order -> (faces written per split, skipped faces)."""
  written, skipped = {s: [] for s in SPLITS}, []
  for (split, faces), crops in zip(groups, results):
    for face, crop in zip(faces, crops):
      if isinstance(crop, sources.Skipped):
        if strict:
          raise sources.DataError(crop.message)
        skipped.append(crop)
        continue
      writers.write(split, len(written[split]), records.serialize_face(
          crop['jpeg'], crop['size'], crop['landmarks'], crop['box'],
          crop['crop'], face.rel_path, face.subset, face.face_index))
      written[split].append(face)
    bar.update(len(faces))
  return written, skipped


def _convert(dataset, spec, writers, strict, num_workers, progress):
  """Crops every face into `writers` -> (faces written per split, skipped)."""
  groups = [('train', g) for g in _by_image(dataset.train)]
  groups += [('val', g) for g in _by_image(dataset.val)]
  results = _map_images([g for _, g in groups], spec, num_workers)
  with (contextlib.closing(results),
        tqdm.tqdm(total=sum(len(g) for _, g in groups), unit='face',
                  disable=not progress) as bar):
    written, skipped = _write_crops(groups, results, writers, strict, bar)
  skipped = sorted(dataset.skipped + skipped,
                   key=lambda s: (s.file, s.face_index))
  return written, skipped


def _split_summary(faces, shards):
  subsets = {}
  for face in faces:
    subsets[face.subset] = subsets.get(face.subset, 0) + 1
  return {
      'faces': len(faces),
      'images': len({f.rel_path for f in faces}),
      'subsets': dict(sorted(subsets.items())),
      'shards': shards,
  }


def _manifest(dataset, spec, names, written, skipped):
  return {
      'schema_version': records.SCHEMA_VERSION,
      'image_size': spec.image_size,
      'crop_context': spec.crop_context,
      'jpeg_quality': spec.jpeg_quality,
      'layout': dataset.layout,
      'data_dir': dataset.data_dir,
      'split': dataset.split,
      'splits': {s: _split_summary(written[s], names[s]) for s in SPLITS},
      'skipped': [s.as_dict() for s in skipped],
      'counts': {
          'faces_annotated': (len(dataset.train) + len(dataset.val) +
                              len(dataset.skipped)),
          'faces_written': len(written['train']) + len(written['val']),
          'faces_skipped': len(skipped),
          'boxes_ignored': dataset.ignored_boxes,
      },
  }


def _check_args(num_shards, num_val_shards, val_fraction, image_size,
                crop_context, jpeg_quality):
  checks = [
      (num_shards >= 1, f'--num_shards={num_shards}: must be at least 1'),
      (num_val_shards >= 0, f'--num_val_shards={num_val_shards}: must be >= 0'),
      (0 <= val_fraction < 1,
       f'--val_fraction={val_fraction}: must be in [0, 1)'),
      (image_size >= 1, f'--image_size={image_size}: must be at least 1'),
      (crop_context > 0, f'--crop_context={crop_context}: must be positive'),
      (1 <= jpeg_quality <= 100,
       f'--jpeg_quality={jpeg_quality}: must be in 1..100'),
  ]
  for ok, message in checks:
    if not ok:
      raise ValueError(message)


def prepare(data_dir, output_dir, *, num_shards=8, num_val_shards=0,
            val_fraction=0.1, all_to=None, layout='auto', image_size=320,
            crop_context=2.0, jpeg_quality=95, strict=False, overwrite=False,
            num_workers=None, progress=True):
  """Converts a 300-W folder into TFRecord shards; returns the manifest.

  The split (sources.load): dlib's labels_ibug_300W_train.xml and _test.xml
  when both are there; else each image goes to val with probability
  `val_fraction`, by a stable hash of its path. `all_to` ('train' or 'val')
  puts every face in that one split instead, e.g. dlib's test XML alone to
  evaluate on all of it. The summary printed at the end says which was done.

  Bad faces are skipped and listed (strict: the first one raises
  sources.DataError and nothing is written). An output folder that already
  holds shards or a manifest raises FileExistsError unless `overwrite`; then
  the old files are replaced only once the new shards are complete. An output
  folder that cannot be created or written raises FileExistsError (a file is
  in the way) or sources.DataError before any work.
  """
  _check_args(num_shards, num_val_shards, val_fraction, image_size,
              crop_context, jpeg_quality)
  _check_output(output_dir, overwrite)
  start = time.perf_counter()
  dataset = sources.load(data_dir, layout, val_fraction, all_to)
  if strict and dataset.skipped:
    raise sources.DataError(dataset.skipped[0].message)
  created = not os.path.isdir(output_dir)
  os.makedirs(output_dir, exist_ok=True)
  _remove_temp_files(output_dir)

  names = shard_names(dataset, num_shards, num_val_shards)
  spec = CropSpec(image_size, crop_context, jpeg_quality)
  writers = _ShardWriters(output_dir, names)
  try:
    written, skipped = _convert(dataset, spec, writers, strict,
                                num_workers or os.cpu_count() or 1, progress)
    if not written['train'] and not written['val']:
      raise sources.DataError(
          f'no usable faces in {data_dir}: all {len(skipped)} skipped, e.g. '
          f'{skipped[0].message}')
    writers.commit()
  except BaseException:
    writers.discard()
    if created and not os.listdir(output_dir):
      os.rmdir(output_dir)
    raise
  manifest = _manifest(dataset, spec, names, written, skipped)
  _write_json(os.path.join(output_dir, records.MANIFEST), manifest)
  print(summary(manifest, time.perf_counter() - start))
  return manifest


def _split_text(split):
  """How the manifest's train/val split was made."""
  if split['method'] == 'dlib_xml':
    return f'{split["train"]} is train, {split["val"]} is val'
  if split['method'] == 'all_to':
    return f'every face in {split["all_to"]} (--all_to={split["all_to"]})'
  fraction = split['val_fraction']
  text = (f'by a hash of each image path, about {100 * fraction:g}% of images '
          f'to val (--val_fraction={fraction})')
  if split.get('annotations') == sources.DLIB_TEST_XML:
    # dlib's test set alone is usually meant to be evaluated on as a whole.
    text += f'; pass --all_to=val to put all of {sources.DLIB_TEST_XML} in val'
  return text


def _subsets_text(subsets, max_listed):
  """Faces per subset, largest first; one folder per person makes hundreds."""
  largest = [f'{name} {count}' for name, count in
             sorted(subsets.items(), key=lambda item: (-item[1], item[0]))]
  if len(largest) <= max_listed:
    return ', '.join(largest)
  return (f'{len(largest)} subsets, largest {", ".join(largest[:max_listed])}, '
          f'... {len(largest) - max_listed} more in {records.MANIFEST}')


def summary(manifest, seconds, max_listed=20, max_subsets=5):
  """Human-readable account of a manifest: faces per split, what was skipped."""
  counts = manifest['counts']
  faces = counts['faces_written']
  shards = sum(len(s['shards']) for s in manifest['splits'].values())
  lines = [f'{faces} faces written to {shards} shards in {seconds:.1f} s '
           f'({faces / max(seconds, 1e-6):.0f} faces/s)',
           f'  split: {_split_text(manifest["split"])}']
  for split, info in manifest['splits'].items():
    line = f'  {split}: {info["faces"]} faces, {info["images"]} images'
    if info['subsets']:
      line += f' ({_subsets_text(info["subsets"], max_subsets)})'
    lines.append(line)
  if counts['boxes_ignored']:
    lines.append(f'  {counts["boxes_ignored"]} boxes marked ignore=1 left out')
  skipped = manifest['skipped']
  lines.append(f'  skipped: {len(skipped)} faces')
  for s in skipped[:max_listed]:
    lines.append(f'    {s["file"]} (face {s["face_index"]}): {s["reason"]}')
  if len(skipped) > max_listed:
    lines.append(f'    ... and {len(skipped) - max_listed} more in '
                 f'{records.MANIFEST}')
  return '\n'.join(lines)


# Command line.


@dataclasses.dataclass
class PrepareConfig:
  """`python -m pipeline.prepare`'s flags: prepare's arguments."""
  data_dir: str = option(help='300-W folder (dlib XML or .pts).')
  output_dir: str = option(help='Folder for the shards and manifest.')
  num_shards: int = option(8, 'Train shards.')
  num_val_shards: int = option(0, 'Val shards; 0: about as large as the '
                               'train shards.')
  val_fraction: float = option(0.1, 'Share of images for val, by a hash of '
                               'the image path (unless dlib train/test XMLs '
                               'or --all_to).')
  all_to: Optional[str] = option(None, 'Put every face into this split (e.g. '
                                 'val for a test set to evaluate on).',
                                 SPLITS)
  layout: str = option('auto', 'Annotation layout.', sources.LAYOUTS)
  image_size: int = option(320, 'Stored crop side in pixels.')
  crop_context: float = option(2.0, 'Stored crop side / face box side: room '
                               'for 45 degree rotation and 0.7 scale '
                               'augmentation.')
  jpeg_quality: int = option(95, 'JPEG quality of the stored crops.')
  strict: bool = option(False, 'A bad face is an error and nothing is '
                        'written.')
  overwrite: bool = option(False, 'Replace shards already in output_dir.')
  num_workers: Optional[int] = option(None, 'Processes; default: all cores.')


def main(argv):
  del argv
  cfg = config_flags.config_from_flags(PrepareConfig)
  prepare(**dataclasses.asdict(cfg))


if __name__ == '__main__':
  config_flags.define_flags(PrepareConfig,
                            required=('data_dir', 'output_dir'))
  config_flags.run(main, 'prepare')
