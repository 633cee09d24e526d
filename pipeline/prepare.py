"""Converts 300-W into sharded TFRecords of face crops.

  python -m pipeline.prepare --data_dir=300w --output_dir=data/300w

Each face becomes a square JPEG crop of `image_size` px around its face box,
`crop_context` times the box side, so that rotation and scale augmentation at
train time stay inside real pixels. Output is deterministic (same input, same
bytes), and atomic: shards are written under temporary names and renamed when
all are complete, and `manifest.json`, which readers require, is written last.
"""

import contextlib
import dataclasses
import functools
import glob
import json
import multiprocessing
import os
import sys
import time

from absl import app
from absl import flags
import cv2
import numpy as np
import tensorflow as tf
import tqdm

from pipeline import geometry
from pipeline import records
from pipeline import sources

SPLITS = ('train', 'val')


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
  found = [p for split in SPLITS
           for p in glob.glob(records.shard_pattern(output_dir, split))]
  manifest = os.path.join(output_dir, records.MANIFEST)
  return sorted(found) + ([manifest] if os.path.exists(manifest) else [])


def _check_output(output_dir, overwrite):
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise FileExistsError(f'--output_dir {output_dir} is a file, not a folder')
  existing = _existing_output(output_dir) if os.path.isdir(output_dir) else []
  if existing and not overwrite:
    raise FileExistsError(
        f'--output_dir {output_dir} already holds {len(existing)} shard or '
        f'manifest files (e.g. {os.path.basename(existing[0])}); pass '
        '--overwrite to replace them')


def _temp_name(output_dir, name):
  return os.path.join(output_dir, f'.{name}.tmp-{os.getpid()}')


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
    json.dump(data, f, indent=2, sort_keys=True)
    f.write('\n')
  os.replace(temp, path)


# Conversion.


def shard_names(dataset, num_shards, num_val_shards):
  """Shard file names per split; at most one shard per face, none empty."""
  # By default val shards are about as large as train shards.
  val_shards = num_val_shards or max(
      1, round(num_shards * len(dataset.val) / max(1, len(dataset.train))))
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
      raise app.UsageError(message)


def prepare(data_dir, output_dir, *, num_shards=8, num_val_shards=0,
            val_fraction=0.1, layout='auto', image_size=320, crop_context=2.0,
            jpeg_quality=95, strict=False, overwrite=False, num_workers=None,
            progress=True):
  """Converts a 300-W folder into TFRecord shards; returns the manifest.

  Bad faces are skipped and listed (strict: the first one raises
  sources.DataError and nothing is written). An output folder that already
  holds shards or a manifest raises FileExistsError unless `overwrite`; then
  the old files are replaced only once the new shards are complete.
  """
  _check_args(num_shards, num_val_shards, val_fraction, image_size,
              crop_context, jpeg_quality)
  start = time.perf_counter()
  dataset = sources.load(data_dir, layout, val_fraction)
  if strict and dataset.skipped:
    raise sources.DataError(dataset.skipped[0].message)
  _check_output(output_dir, overwrite)
  created = not os.path.isdir(output_dir)
  os.makedirs(output_dir, exist_ok=True)

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


def summary(manifest, seconds, max_listed=20):
  """Human-readable account of a manifest: faces per split, what was skipped."""
  counts = manifest['counts']
  faces = counts['faces_written']
  shards = sum(len(s['shards']) for s in manifest['splits'].values())
  lines = [f'{faces} faces written to {shards} shards in {seconds:.1f} s '
           f'({faces / max(seconds, 1e-6):.0f} faces/s)']
  for split, info in manifest['splits'].items():
    subsets = ', '.join(f'{k} {v}' for k, v in info['subsets'].items())
    lines.append(f'  {split}: {info["faces"]} faces, {info["images"]} images '
                 f'({subsets})')
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

FLAGS = flags.FLAGS


# Flags are defined only when run as a program, so that importing this module
# next to others with the same flag names does not clash.
def define_flags():
  flags.DEFINE_string('data_dir', None, '300-W folder (dlib XML or .pts).')
  flags.DEFINE_string('output_dir', None, 'Folder for the shards and manifest.')
  flags.DEFINE_integer('num_shards', 8, 'Train shards.')
  flags.DEFINE_integer('num_val_shards', 0,
                       'Val shards; 0: about as large as the train shards.')
  flags.DEFINE_float('val_fraction', 0.1,
                     'Share of images for val (unless dlib train/test XMLs).')
  flags.DEFINE_enum('layout', 'auto', sources.LAYOUTS, 'Annotation layout.')
  flags.DEFINE_integer('image_size', 320, 'Stored crop side in pixels.')
  flags.DEFINE_float('crop_context', 2.0,
                     'Stored crop side / face box side: room for 45 degree '
                     'rotation and 0.7 scale augmentation.')
  flags.DEFINE_integer('jpeg_quality', 95, 'JPEG quality of the stored crops.')
  flags.DEFINE_bool('strict', False,
                    'A bad face is an error and nothing is written.')
  flags.DEFINE_bool('overwrite', False, 'Replace shards already in output_dir.')
  flags.DEFINE_integer('num_workers', None, 'Processes; default: all cores.')
  flags.mark_flags_as_required(['data_dir', 'output_dir'])


def main(argv):
  del argv
  try:
    prepare(FLAGS.data_dir, FLAGS.output_dir, num_shards=FLAGS.num_shards,
            num_val_shards=FLAGS.num_val_shards,
            val_fraction=FLAGS.val_fraction, layout=FLAGS.layout,
            image_size=FLAGS.image_size,
            crop_context=FLAGS.crop_context, jpeg_quality=FLAGS.jpeg_quality,
            strict=FLAGS.strict, overwrite=FLAGS.overwrite,
            num_workers=FLAGS.num_workers)
  except (sources.DataError, FileExistsError) as e:
    sys.exit(f'prepare: {e}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
