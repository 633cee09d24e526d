"""Inference speed and accuracy of an export beside dlib's 68-point predictor,
on the same whole photos.

  python -m bench.bench_inference [--model=pretrained] \
      [--data_dir=../shared/data/300w-photos] [--split=val] [--num_threads=1]

--data_dir holds photos with one 300-W .pts file per annotated face (the
'pts' layout of pipeline/sources.py); --split=val takes the faces of
sources.load's hash split (val_fraction 0.1) that training holds out,
--split=train the rest, --split=all every photo. Prints four tables:
  1. landmark time per face at batch 1 (view crop + network; median ms) on
     the tight landmark box, for the SavedModel and every .tflite in --model
     at each of --threads, and dlib's shape predictor (single-threaded);
  2. the whole path on whole photos, as evaluate.py's photo mode scores it
     (evaluation/photos.py): each detector (BlazeFace, Haar) + the landmarker
     Landmarker.load picks (refine on), and dlib's HOG detector + shape
     predictor: faces found / annotated, NME on found faces, failure rate at
     0.08 counting misses as failures, median ms per photo (detection +
     landmarks);
  3. NME given the tight landmark box (the 300-W protocol, no detector) for
     ours (no refine, as evaluate.py) and dlib on every annotated face;
  4. end-to-end FPS on a generated 640x480 video with one face (frames decoded
     beforehand): each detector + ours (refine), BlazeFace + ours tracked
     (facelandmark/tracking.py), dlib's HOG detector + predictor.
Tables 2 to 4 run at --num_threads (TF Lite and OpenCV); dlib runs on one.
bench/bench_tracking.py measures tracking itself: jitter and the webcam loop.

dlib's HOG detector upsamples photos once (as face_recognition does: faces
down to about 40 px, as in AFW's group photos) and video frames not at all
(the face is 300 px: what a real-time user would run).

dlib (PyPI dlib-bin) with its model file (PyPI face-recognition-models, or
Debian's libdlib-data) and OpenCV 4's Haar cascade are optional: what is
missing is skipped with a line saying so. They need not be in the project's
environment; a separate one that sees the project's packages works, e.g.
  python3 -m venv /tmp/bench-venv
  SITE=/tmp/bench-venv/lib/python3.11/site-packages
  PROJECT_SITE=/work/venv/lib/python3.11/site-packages
  echo "import site; site.addsitedir('$PROJECT_SITE')" > $SITE/zz_project.pth
  echo "$PWD" > $SITE/zz_repo.pth  # the repository: bench/ is not installed
  /tmp/bench-venv/bin/pip install dlib-bin face-recognition-models
  /tmp/bench-venv/bin/python -m bench.bench_inference
"""

import glob
import os
import statistics
import time

from absl import app
from absl import flags
import cv2
import numpy as np
import tensorflow as tf

from bench import timing
from evaluation import evaluate_lib
from evaluation import photos as photos_lib
from evaluation import report
from evaluation import samples as samples_lib
from facelandmark import detectors
from facelandmark import finder as finder_lib
from facelandmark import tracking
from facelandmark.errors import WebcamError
from facelandmark import landmarker as runtime
from model import landmarker as landmarker_lib
from model import metrics
from facelandmark import geometry
from facelandmark import views

SPLITS = ('val', 'train', 'all')
DETECTORS = ('blazeface', 'haar')
DLIB_MODEL = 'shape_predictor_68_face_landmarks.dat'
DLIB_MODEL_PATHS = ('/usr/share/dlib/' + DLIB_MODEL,)  # Debian libdlib-data
DLIB_UPSAMPLE_PHOTOS, DLIB_UPSAMPLE_VIDEO = 1, 0
TIMING_FACES = 100
VIDEO_SIZE = (640, 480)
FAILURE = f'failure_rate_{report.FAILURE_THRESHOLDS[0]:.2f}'


# Our models for table 1, each a Landmarker.


def saved_model_landmarker(path, threads):
  """The SavedModel's views signature in a TF1 session: TF2 threads are
  process-wide, a session's are its own, so one process compares counts."""
  graph = tf.Graph()
  with graph.as_default():
    session = tf.compat.v1.Session(graph=graph, config=tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1))
    signature = tf.compat.v1.saved_model.loader.load(
        session, ['serve'], path).signature_def[landmarker_lib.VIEWS_SIGNATURE]
  feed = signature.inputs['views'].name
  fetch = signature.outputs['landmarks'].name
  metadata = runtime.read_metadata(path)
  return landmarker_lib.Landmarker(
      lambda views: session.run(fetch, {feed: views}), metadata['input_size'],
      metadata['view_scale'], metadata)


def export_files(export_dir, threads):
  """{label: Landmarker}: the SavedModel and every .tflite, per thread count."""
  files = sorted(glob.glob(os.path.join(export_dir, '*.tflite')))
  models = {}
  for n in threads:
    models[f'SavedModel, {n} thread(s)'] = saved_model_landmarker(export_dir, n)
    for path in files:
      models[f'{os.path.basename(path)}, {n} thread(s)'] = (
          landmarker_lib.Landmarker.load(path, num_threads=n))
  return models


# dlib, in the project's shapes.


def box_from_dlib(rect):
  """A dlib rectangle (whole pixels, right and bottom inclusive) as a corner
  box [x0, y0, x1, y1]."""
  return [rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1]


def dlib_ltrb(box):
  """The whole-pixel (left, top, right, bottom) dlib rectangle of a corner box:
  box_from_dlib's inverse."""
  x0, y0, x1, y1 = (int(round(v)) for v in box)
  return x0, y0, x1 - 1, y1 - 1


class DlibLandmarker:
  """dlib's shape predictor with the Landmarker's `predict`."""

  def __init__(self, dlib, predictor):
    self._dlib, self._predictor = dlib, predictor

  def predict(self, image, boxes, refine=False, flip=False):
    """[K, 68, 2] corner coordinates. `refine` and `flip` are ignored: dlib
    has neither (its regression cascade refines on its own)."""
    del refine, flip
    faces = [geometry.from_dlib_xml([[p.x, p.y] for p in self._predictor(
        image, self._dlib.rectangle(*dlib_ltrb(box))).parts()])
             for box in boxes]
    return np.array(faces, np.float64).reshape(-1, geometry.NUM_LANDMARKS, 2)


def dlib_detector(hog, upsample):
  """dlib's HOG detector as BGR frame -> detectors.Detections."""

  def detect(frame):
    rects = hog(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), upsample)
    boxes = np.array([box_from_dlib(r) for r in rects],
                     np.float64).reshape(-1, 4)
    return detectors.Detections(boxes, np.ones(len(boxes)))

  return detect


def load_dlib(model_path):
  """((DlibLandmarker, HOG detector), None) or (None, why dlib is skipped)."""
  try:
    import dlib  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None, 'dlib skipped: no dlib module (pip install dlib-bin)'
  candidates = [model_path] if model_path else list(DLIB_MODEL_PATHS)
  try:
    import face_recognition_models  # pylint: disable=g-import-not-at-top
    candidates.append(face_recognition_models.pose_predictor_model_location())
  except ImportError:
    pass
  found = [p for p in candidates if p and os.path.isfile(p)]
  if not found:
    return None, (f'dlib skipped: no {DLIB_MODEL} (pip install '
                  'face-recognition-models, apt-get install libdlib-data, or '
                  '--dlib_model)')
  return (DlibLandmarker(dlib, dlib.shape_predictor(found[0])),
          dlib.get_frontal_face_detector()), None


# Measurements.


class PhotoClock:
  """A detector and a landmarker for photos.photo_results that time each
  photo, from the detector's call to the landmarks' return."""

  def __init__(self, detect, landmarker):
    self._detect, self._landmarker = detect, landmarker
    self._start = None
    self.seconds = []

  def detect(self, frame):
    self._start = time.perf_counter()
    return self._detect(frame)

  def predict(self, image, boxes, **options):
    landmarks = self._landmarker.predict(image, boxes, **options)
    self.seconds.append(time.perf_counter() - self._start)
    return landmarks


def nme_percent(summary):
  """report.summarize's NME in percent; '-' when no face was found (None)."""
  return '-' if summary['nme'] is None else f'{100 * summary["nme"]:.2f}'


def whole_path_row(label, detect, landmarker, samples, normalization):
  """Table 2's row: photo mode with refine, timed per photo."""
  clock = PhotoClock(detect, landmarker)
  results = photos_lib.photo_results(clock, clock.detect, samples, True,
                                     normalization)
  s = report.summarize(results.nme, results.found)
  return [label, f'{s["found"]}/{s["faces"]}', nme_percent(s),
          f'{100 * s[FAILURE]:.2f}',
          f'{1000 * statistics.median(clock.seconds):.1f}']


def tight_box_row(label, landmarker, samples, normalization):
  """Table 3's row: every face on its tight landmark box, one pass."""
  s = report.summarize(evaluate_lib.predict_samples(
      landmarker, samples, False, normalization).nme)
  return [label, s['faces'], nme_percent(s), f'{100 * s[FAILURE]:.2f}']


def time_per_face(predict, faces, warmup=5):
  """Median milliseconds of one batch-1 call on (image, box) pairs."""
  for image, box in faces[:warmup]:
    predict(image, box[None])
  times = []
  for image, box in faces:
    start = time.perf_counter()
    predict(image, box[None])
    times.append(time.perf_counter() - start)
  return 1000 * statistics.median(times)


def synthetic_video(face_image, landmarks, num_frames):
  """BGR 640x480 frames of one real face drifting across a grey background."""
  width, height = VIDEO_SIZE
  square = geometry.square_around(geometry.landmark_box(landmarks), 1.8)
  (patch,) = views.crop_views(face_image, [square], 300)
  patch = cv2.cvtColor(patch, cv2.COLOR_RGB2BGR)
  frames = []
  for i in range(num_frames):
    frame = np.full((height, width, 3), 128, np.uint8)
    x = int(40 + (width - 380) * i / max(num_frames - 1, 1))
    frame[90:390, x:x + 300] = patch
    frames.append(frame)
  return frames


def end_to_end_fps(step, frames, warmup=3):
  """(frames per second, frames with a face) of `step`: BGR frame -> faces."""
  for frame in frames[:warmup]:
    step(frame)
  found = 0
  start = time.perf_counter()
  for frame in frames:
    found += bool(len(step(frame)))
  return len(frames) / (time.perf_counter() - start), found


def video_rows(ours, finders, dlib_finder, frames):
  """Table 4's rows: each of our FaceFinders (`ours`: the model file),
  BlazeFace's tracked, then dlib's."""
  rows = []
  for name, finder in finders.items():
    fps, found = end_to_end_fps(lambda f, finder=finder: finder.find(
        f, bgr=True), frames)
    rows.append([f'{name} + {ours}, refine', f'{fps:.1f}',
                 f'{found}/{len(frames)}'])
  if 'blazeface' in finders:
    tracker = tracking.Tracker(finders['blazeface'])
    # Its finder is warm from the row before; warm-up frames would start its
    # track ahead of frame 0.
    fps, found = end_to_end_fps(tracker.step, frames, warmup=0)
    rows.append([f'blazeface + {ours}, tracked (detector on '
                 f'{tracker.detections}/{len(frames)} frames)', f'{fps:.1f}',
                 f'{found}/{len(frames)}'])
  if dlib_finder:
    fps, found = end_to_end_fps(lambda f: dlib_finder.find(f, bgr=True),
                                frames)
    rows.append(['dlib HOG + shape predictor', f'{fps:.1f}',
                 f'{found}/{len(frames)}'])
  return rows


def bench(model=landmarker_lib.SHIPPED_MODEL,
          data_dir='../shared/data/300w-photos', split='val', threads=(1, 2),
          num_threads=1, normalization='outer_eye', video_frames=60,
          dlib_model_path=None, log=print):
  """Runs the four measurements and prints their tables."""
  if split not in SPLITS:
    raise ValueError(f'--split must be one of {SPLITS}, got {split!r}')
  if normalization not in metrics.NORMALIZATIONS:
    raise ValueError(f'--normalization must be one of '
                     f'{metrics.NORMALIZATIONS}, got {normalization!r}')
  # Haar runs on OpenCV's threads: the same count as TF Lite's.
  cv2.setNumThreads(num_threads)
  samples = list(samples_lib.folder_samples(data_dir, split, 'pts',
                                            'landmarks', log))
  faces = [(s.image, box) for s in samples for box in s.boxes]
  landmarker = landmarker_lib.Landmarker.load(model, num_threads)
  ours = os.path.basename(landmarker.source)
  dlib_models, dlib_skipped = load_dlib(dlib_model_path)
  dlib_predictor, dlib_hog = dlib_models or (None, None)
  log(f'{len(samples)} photos, {len(faces)} annotated faces ({split}) from '
      f'{data_dir}; model {model} (input {landmarker.input_size} px)')
  validated = landmarker.metadata.get('comparison', {}).get('faces')
  if validated:
    # --split is --data_dir's own hash split: a model trained from another
    # folder may have seen these faces.
    log(f'Model validated on {validated} (its metadata.json)')
  if dlib_skipped:
    log(dlib_skipped)

  rows = [[label, f'{time_per_face(m.predict, faces[:TIMING_FACES]):.2f}']
          for label, m in export_files(model, threads).items()]
  if dlib_predictor:
    ms = time_per_face(dlib_predictor.predict, faces[:TIMING_FACES])
    rows.append(['dlib shape predictor, 1 thread', f'{ms:.2f}'])
  log(timing.table('\n1. Landmark time per face, batch 1, tight box (crop + '
                   'network)', ['model', 'median ms'], rows))

  finders = {}
  for name in DETECTORS:
    try:
      finders[name] = finder_lib.FaceFinder(
          landmarker, detectors.make_detector(name, num_threads))
    except WebcamError as e:
      log(f'{name} skipped: {e}')
  rows = [whole_path_row(f'{name} + {ours}, refine', finder.detect,
                         landmarker, samples, normalization)
          for name, finder in finders.items()]
  dlib_finder = None
  if dlib_predictor:
    rows.append(whole_path_row(
        f'dlib HOG (upsample {DLIB_UPSAMPLE_PHOTOS}) + shape predictor',
        dlib_detector(dlib_hog, DLIB_UPSAMPLE_PHOTOS), dlib_predictor,
        samples, normalization))
    dlib_finder = finder_lib.FaceFinder(
        dlib_predictor, dlib_detector(dlib_hog, DLIB_UPSAMPLE_VIDEO),
        refine=False)
  log(timing.table(
      f'\n2. Whole path on whole photos ({num_threads} thread(s)); found: '
      f'landmark box IoU >= {photos_lib.MATCH_IOU}; misses fail',
      ['pipeline', 'found', 'NME % (found)',
       f'FR@{report.FAILURE_THRESHOLDS[0]:.2f} %', 'median ms / photo'],
      rows))

  rows = [tight_box_row(f'{ours}, no refine', landmarker, samples,
                        normalization)]
  if dlib_predictor:
    rows.append(tight_box_row('dlib shape predictor', dlib_predictor, samples,
                              normalization))
  log(timing.table(f'\n3. Given the tight landmark box, every face '
                   f'({normalization} NME)',
                   ['model', 'faces', 'NME %',
                    f'FR@{report.FAILURE_THRESHOLDS[0]:.2f} %'], rows))
  if dlib_predictor:
    log('Note: dlib\'s predictor was trained on its own HOG detector\'s boxes '
        '(table 2), not tight landmark boxes; and on all of iBUG 300-W, '
        'these faces included: its NME here is optimistic.')

  sample = samples[0]
  frames = synthetic_video(sample.image, sample.landmarks[0], video_frames)
  log(timing.table(
      f'\n4. End to end, {VIDEO_SIZE[0]}x{VIDEO_SIZE[1]} video, one face '
      f'({num_threads} thread(s); dlib HOG upsample {DLIB_UPSAMPLE_VIDEO})',
      ['pipeline', 'FPS', 'frames with a face'],
      video_rows(ours, finders, dlib_finder, frames)))


FLAGS = flags.FLAGS


def define_flags():
  """The bench's flags, defined when it runs: tests import this module."""
  flags.DEFINE_string('model', landmarker_lib.SHIPPED_MODEL,
                      'Export folder (export.py).')
  flags.DEFINE_string('data_dir', '../shared/data/300w-photos',
                      'Photos with 300-W .pts files, one per annotated face.')
  flags.DEFINE_enum('split', 'val', SPLITS, 'val: the photos training holds '
                    'out (hash split, val_fraction 0.1); all: every photo.')
  flags.DEFINE_list('threads', ['1', '2'], 'Thread counts of table 1.')
  flags.DEFINE_integer('num_threads', 1, 'TF Lite and OpenCV threads of the '
                       'photo and video tables.')
  flags.DEFINE_enum('normalization', 'outer_eye', metrics.NORMALIZATIONS,
                    'NME normalisation.')
  flags.DEFINE_integer('video_frames', 60, 'Frames of the end-to-end video.')
  flags.DEFINE_string('dlib_model', None, f'Path of {DLIB_MODEL} (default: '
                      'face-recognition-models or Debian\'s libdlib-data).')


def main(argv):
  del argv
  bench(FLAGS.model, FLAGS.data_dir, FLAGS.split,
        tuple(int(t) for t in FLAGS.threads), FLAGS.num_threads,
        FLAGS.normalization, FLAGS.video_frames, FLAGS.dlib_model)


if __name__ == '__main__':
  define_flags()
  app.run(main)
