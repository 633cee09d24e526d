"""Face detectors for crowds: short range, full range and both combined on
300-W's group photos (AFW) and on portraits (HELEN), side by side.

  python -m bench.bench_crowds [--data_dir=../shared/data/300w-photos] \
      [--portraits=100] [--num_threads=1]

Every AFW photo (`afw/`), and the first --portraits HELEN photos (by name)
with one annotated face (`helen/`). An annotated face is found when a
detection overlaps its tight landmark box by IoU >= 0.3 (detectors.match,
one to one). A detection is merged when it holds the centres of two or more
annotated faces' landmark boxes: one box over neighbours, whose landmarks
smear across both. Columns: faces found / annotated; merged boxes; the
smallest found face and the median missed face, as a share of the photo's
shorter side (sqrt(w * h) of the landmark box); other detections (faces
300-W left unannotated, or false); median ms per photo (detection only, on
the decoded photo; one thread).
"""

import collections
import statistics
import time

from absl import app
from absl import flags
import numpy as np

from bench import timing
from facelandmark import detectors
from pipeline import sources

DETECTORS = ('blazeface', 'blazeface_full', 'blazeface_both')


def photo_faces(data_dir, subset, one_face=False, limit=None):
  """[(path, [landmark box])] of the photos in `data_dir`/`subset`."""
  dataset = sources.load(data_dir, 'pts')
  by_photo = collections.defaultdict(list)
  for face in dataset.train + dataset.val:
    if face.subset.split('/')[0] == subset:
      by_photo[face.image_path].append(face.box)
  photos = sorted((p, b) for p, b in by_photo.items()
                  if not one_face or len(b) == 1)
  return photos[:limit] if limit else photos


def merged(boxes, truth):
  """How many of `boxes` hold the centres of two or more `truth` boxes."""
  centres = (truth[:, :2] + truth[:, 2:]) / 2
  return sum(int(np.sum(np.all((centres >= b[:2]) & (centres <= b[2:]),
                               axis=1)) >= 2) for b in boxes)


def measure(detect, photos):
  found = annotated = merges = other = 0
  seconds, found_sizes, missed_sizes = [], [], []
  for path, truth in photos:
    image = sources.read_image(path)
    truth = np.array(truth, np.float64).reshape(-1, 4)
    start = time.perf_counter()
    boxes = detect(image).boxes
    seconds.append(time.perf_counter() - start)
    matches = detectors.match(boxes, truth)
    sizes = np.sqrt(np.prod(truth[:, 2:] - truth[:, :2], axis=1)) / min(
        image.shape[:2])
    found += int(np.sum(matches >= 0))
    annotated += len(truth)
    other += len(boxes) - int(np.sum(matches >= 0))
    merges += merged(boxes, truth)
    found_sizes += sizes[matches >= 0].tolist()
    missed_sizes += sizes[matches < 0].tolist()
  return [f'{found}/{annotated} ({100 * found / annotated:.1f}%)', merges,
          f'{min(found_sizes):.3f}' if found_sizes else '-',
          f'{statistics.median(missed_sizes):.3f}' if missed_sizes else '-',
          other, f'{1000 * statistics.median(seconds):.1f}']


def bench(data_dir, portraits=100, num_threads=1, log=print):
  sets = [('AFW group photos', photo_faces(data_dir, 'afw')),
          ('HELEN portraits', photo_faces(data_dir, 'helen', True,
                                          portraits))]
  header = ['photos', 'detector', 'faces found', 'merged boxes',
            'smallest found', 'median missed', 'other detections',
            'ms / photo']
  rows = []
  for label, photos in sets:
    for name in DETECTORS:
      detect = detectors.make_detector(name, num_threads)
      note = ' (photo default)' if name == detectors.PHOTO_DETECTOR else (
          ' (video default)' if name == detectors.VIDEO_DETECTOR else '')
      rows.append([f'{label} ({len(photos)})', name + note] +
                  measure(detect, photos))
  log(timing.table('Detectors on whole photos; sizes are shares of the '
                   "photo's shorter side", header, rows))


FLAGS = flags.FLAGS
flags.DEFINE_string('data_dir', '../shared/data/300w-photos', '300-W photos '
                    'with .pts files (afw/ and helen/ inside).')
flags.DEFINE_integer('portraits', 100, 'HELEN photos of one face to take.')
flags.DEFINE_integer('num_threads', 1, 'TF Lite threads.')


def main(argv):
  del argv
  bench(FLAGS.data_dir, FLAGS.portraits, FLAGS.num_threads)


if __name__ == '__main__':
  app.run(main)
