"""Face detectors on whole 300-W photos: faces found, box error, speed, and how
each frames faces compared with the tight landmark box.

  python -m bench.bench_detectors [--data_dir=../shared/data/300w-photos] \
      [--split=val] [--num_threads=1]

--data_dir holds photos with one 300-W .pts file per annotated face (the
'pts' layout of pipeline/sources.py); --split=val takes the photos of the
training split's val share (sources.load's hash split, val_fraction 0.1),
--split=train the rest (what a landmarker is trained on),
--split=all every photo. Each detector runs as the webcam makes it
(detectors.make_detector) on the decoded BGR photo. An annotated face is found
when a detection overlaps its tight landmark box by IoU >= 0.3
(detectors.MATCH_IOU; one to one, best overlap first); other detections may be
faces 300-W left unannotated.

Prints two tables:
  1. per detector: faces found / annotated, overall and per subset; other
     detections; mean centre error over the face size (sqrt(w * h) of the
     landmark box) on found faces; median ms per photo (detection only);
  2. detector box vs landmark box on found faces (detectors.box_statistics):
     mean and std of the centre offset / face size in x and y, and of
     log(detector w / landmark w) and log(detector h / landmark h): what a
     landmarker must tolerate to run on that detector's boxes.

dlib's HOG detector joins when `import dlib` works (upsampling the photo once,
as face_recognition does, so faces down to about 40 px); bench_inference.py
shows a separate environment with dlib.
"""

import collections
import dataclasses
import statistics
import time

from absl import app
from absl import flags
import cv2
import numpy as np

from bench import timing
from facelandmark import detectors
from facelandmark.errors import WebcamError
from pipeline import sources

SPLITS = ('val', 'train', 'all')


def photos(data_dir, split):
  """[(image path, [Face])]: the split's faces grouped per photo, by path."""
  dataset = sources.load(data_dir, 'pts')
  faces = {'val': dataset.val, 'train': dataset.train,
           'all': dataset.train + dataset.val}[split]
  by_photo = collections.defaultdict(list)
  for face in faces:
    by_photo[face.image_path].append(face)
  return sorted(by_photo.items())


def dlib_hog():
  """(BGR frame -> Detections, None) or (None, why dlib is skipped)."""
  try:
    import dlib  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None, 'dlib HOG skipped: no dlib module (pip install dlib-bin)'
  hog = dlib.get_frontal_face_detector()

  def detect(frame):
    rects = hog(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), 1)
    # dlib rectangles are whole pixels, right and bottom inclusive.
    boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1]
                      for r in rects], np.float64).reshape(-1, 4)
    return detectors.Detections(boxes, np.ones(len(boxes)))

  return detect, None


def candidates(num_threads):
  """({name: BGR frame -> Detections}, [lines on what is skipped])."""
  found, skipped = {}, []
  for name in ('blazeface', 'blazeface_full', 'haar'):
    try:
      found[name] = detectors.make_detector(name, num_threads=num_threads)
    except WebcamError as e:
      skipped.append(f'{name} skipped: {e}')
  hog, why = dlib_hog()
  if hog:
    found['dlib HOG'] = hog
  else:
    skipped.append(why)
  return found, skipped


@dataclasses.dataclass
class Tally:
  """One detector's results over the photos."""
  annotated: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)  # faces per subset
  found: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)
  other: int = 0        # detections matching no annotated face
  seconds: list = dataclasses.field(default_factory=list)  # per photo
  detected: list = dataclasses.field(default_factory=list)  # found faces' boxes
  truth: list = dataclasses.field(default_factory=list)  # their landmark boxes

  def add(self, faces, boxes, seconds):
    self.seconds.append(seconds)
    matches = detectors.match(boxes, [face.box for face in faces])
    for face, index in zip(faces, matches):
      self.annotated[face.subset] += 1
      if index >= 0:
        self.found[face.subset] += 1
        self.detected.append(boxes[index])
        self.truth.append(face.box)
    self.other += len(boxes) - int(np.sum(matches >= 0))


def measure(detect_fns, photo_faces, log):
  """{name: Tally}, decoding each photo once for every detector."""
  tallies = {name: Tally() for name in detect_fns}
  for path, faces in photo_faces:
    try:
      image = sources.read_image(path)
    except sources.BadImage as e:
      log(f'{path}: {e}; skipped')
      continue
    for name, detect in detect_fns.items():
      start = time.perf_counter()
      boxes = detect(image).boxes
      tallies[name].add(faces, boxes, time.perf_counter() - start)
  return tallies


def _share(found, total):
  return f'{found}/{total} ({100 * found / max(total, 1):.1f}%)'


def found_rows(tallies):
  subsets = sorted({s for t in tallies.values() for s in t.annotated})
  rows = []
  for name, t in tallies.items():
    offsets = detectors.box_offsets(np.reshape(t.detected, (-1, 4)),
                                    np.reshape(t.truth, (-1, 4)))
    error = np.mean(np.hypot(offsets[:, 0], offsets[:, 1])) if len(
        offsets) else np.nan
    rows.append([name, _share(sum(t.found.values()),
                              sum(t.annotated.values()))] +
                [_share(t.found[s], t.annotated[s]) for s in subsets] +
                [t.other, f'{error:.3f}',
                 f'{1000 * statistics.median(t.seconds):.1f}'])
  header = (['detector', 'found'] + [f'found {s}' for s in subsets] +
            ['other', 'centre err / size', 'median ms'])
  return header, rows


def statistics_rows(tallies):
  rows = []
  for name, t in tallies.items():
    stats = detectors.box_statistics(np.reshape(t.detected, (-1, 4)),
                                     np.reshape(t.truth, (-1, 4)))
    rows.append([name, len(t.detected)] + [
        f'{value:+.3f}' if k == 0 else f'{value:.3f}'
        for key in detectors.BOX_STATISTICS
        for k, value in enumerate(stats[key])])
  header = ['detector', 'faces'] + [
      f'{key} {what}' for key in detectors.BOX_STATISTICS
      for what in ('mean', 'std')]
  return header, rows


def bench(data_dir, split='val', num_threads=1, log=print):
  """Runs every available detector on the split's photos; prints the tables."""
  if split not in SPLITS:
    raise ValueError(f'--split must be one of {SPLITS}, got {split!r}')
  # Haar runs on OpenCV's threads: the same count as TF Lite's.
  cv2.setNumThreads(num_threads)
  detect_fns, skipped = candidates(num_threads)
  photo_faces = photos(data_dir, split)
  log(f'{len(photo_faces)} photos, {sum(len(f) for _, f in photo_faces)} '
      f'annotated faces ({split}) from {data_dir}; {num_threads} thread(s); '
      f'found: IoU >= {detectors.MATCH_IOU} with the tight landmark box')
  for line in skipped:
    log(line)
  tallies = measure(detect_fns, photo_faces, log)
  log(timing.table('\nFaces found, centre error, time per photo', *found_rows(
      tallies)))
  log(timing.table('\nDetector box vs landmark box on found faces: x, y = centre '
            'offset / size; log_w, log_h = log size ratios',
            *statistics_rows(tallies)))


FLAGS = flags.FLAGS
flags.DEFINE_string('data_dir', '../shared/data/300w-photos',
                    'Photos with 300-W .pts files, one per annotated face.')
flags.DEFINE_enum('split', 'val', SPLITS, 'val: the training split\'s val '
                  'photos; all: every photo.')
flags.DEFINE_integer('num_threads', 1, 'TF Lite and OpenCV threads.')


def main(argv):
  del argv
  bench(FLAGS.data_dir, FLAGS.split, FLAGS.num_threads)


if __name__ == '__main__':
  app.run(main)
