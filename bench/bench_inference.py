"""Inference speed and accuracy of an export, beside dlib's 68-point predictor.

  python -m bench.bench_inference --model=EXPORT \
      [--data_dir=../shared/data/300w-sample] [--max_faces=400]

Prints three tables:
  1. landmark time per face at batch 1 (view crop + network; median ms) for
     the SavedModel and every .tflite in EXPORT, at each of --threads, and
     dlib's shape predictor (single-threaded);
  2. NME (outer eye corners, %) on --data_dir's faces: ours given the tight
     landmark box (the 300-W protocol); dlib given the same box, and its own
     HOG detector's box where that finds the face (what dlib was trained on);
  3. end-to-end FPS on a generated 640x480 video with one face (frames decoded
     beforehand): Haar cascade + two landmark passes for ours, dlib's HOG
     detector + predictor for dlib.

dlib (PyPI dlib-bin) with its model file (PyPI face-recognition-models, or
Debian's libdlib-data) and OpenCV 4's Haar cascades are optional: what is
missing is skipped with a line saying so. They need not be in the project's
environment; a separate one that sees the project's packages works, e.g.
  python3 -m venv /tmp/bench-venv
  PROJECT_SITE=/work/venv/lib/python3.11/site-packages
  echo "import site; site.addsitedir('$PROJECT_SITE')" \
      > /tmp/bench-venv/lib/python3.11/site-packages/zz_project.pth
  /tmp/bench-venv/bin/pip install "opencv-python-headless<5" dlib-bin \
      face-recognition-models
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
from evaluation import samples as samples_lib
from live import detectors
from live.errors import WebcamError
from model import landmarker as landmarker_lib
from model import metrics
from pipeline import geometry
from pipeline import views

DLIB_MODEL = 'shape_predictor_68_face_landmarks.dat'
DLIB_MODEL_PATHS = ('/usr/share/dlib/' + DLIB_MODEL,)  # Debian libdlib-data
VIDEO_SIZE = (640, 480)


# Models, each as "RGB image, [K, 4] boxes -> [K, 68, 2]".


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
  metadata = landmarker_lib.read_metadata(path)
  return landmarker_lib.Landmarker(
      lambda views: session.run(fetch, {feed: views}), metadata['input_size'],
      metadata['view_scale'], metadata)


def ours(export_dir, threads):
  """{label: Landmarker}: the SavedModel and every .tflite, per thread count."""
  files = sorted(glob.glob(os.path.join(export_dir, '*.tflite')))
  models = {}
  for n in threads:
    models[f'SavedModel, {n} thread(s)'] = saved_model_landmarker(export_dir, n)
    for path in files:
      models[f'{os.path.basename(path)}, {n} thread(s)'] = (
          landmarker_lib.Landmarker.load(path, num_threads=n))
  return models


def dlib_model(model_path):
  """(predict function, None) or (None, why dlib is skipped)."""
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
  predictor = dlib.shape_predictor(found[0])
  detector = dlib.get_frontal_face_detector()

  def predict(image, boxes):
    faces = []
    for x0, y0, x1, y1 in boxes:
      # dlib rectangles are whole pixels, right and bottom inclusive.
      shape = predictor(image, dlib.rectangle(
          int(round(x0)), int(round(y0)), int(round(x1)) - 1,
          int(round(y1)) - 1))
      faces.append(geometry.from_dlib_xml(
          [[p.x, p.y] for p in shape.parts()]))
    return np.array(faces).reshape(-1, geometry.NUM_LANDMARKS, 2)

  def detect(image):
    return np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1]
                     for r in detector(image, 0)], np.float64).reshape(-1, 4)

  predict.detect = detect
  return predict, None


# Faces.


def load_faces(data_dir, max_faces):
  """[(RGB image, tight box [4], landmarks [68, 2])], evenly over the folder."""
  faces = [(s.image, box, points)
           for s in samples_lib.folder_samples(data_dir, log=lambda *_: None)
           for box, points in zip(s.boxes, s.landmarks)]
  if max_faces and len(faces) > max_faces:
    faces = [faces[i] for i in np.linspace(0, len(faces) - 1, max_faces,
                                           dtype=int)]
  return faces


def best_match(detected, box, min_iou=0.3):
  """The detected box overlapping `box` most (IoU >= min_iou), or None."""
  if not len(detected):
    return None
  low = np.maximum(detected[:, :2], box[:2])
  high = np.minimum(detected[:, 2:], box[2:])
  inter = np.prod(np.clip(high - low, 0, None), axis=1)
  areas = np.prod(detected[:, 2:] - detected[:, :2], axis=1)
  iou = inter / (areas + np.prod(box[2:] - box[:2]) - inter)
  return detected[np.argmax(iou)] if iou.max() >= min_iou else None


def nme_percent(predicted, true):
  return 100 * float(np.mean(metrics.nme(np.array(predicted),
                                         np.array(true)).numpy()))


# Measurements.


def time_per_face(predict, faces, warmup=5):
  """Median milliseconds of one batch-1 call."""
  for image, box, _ in faces[:warmup]:
    predict(image, box[None])
  times = []
  for image, box, _ in faces:
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


def end_to_end_fps(detect, predict, frames):
  """Frames per second of detection + landmarks on frames in memory."""
  for frame in frames[:3]:
    predict(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), detect(frame))
  found = 0
  start = time.perf_counter()
  for frame in frames:
    boxes = detect(frame)
    found += bool(len(boxes))
    predict(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), boxes)
  return len(frames) / (time.perf_counter() - start), found


def bench(model, data_dir, max_faces=400, threads=(1, 2), video_frames=60,
          dlib_model_path=None, log=print):
  """Runs the three measurements and prints their tables."""
  faces = load_faces(data_dir, max_faces)
  models = ours(model, threads)
  dlib_predict, dlib_skipped = dlib_model(dlib_model_path)
  log(f'{len(faces)} faces from {data_dir}; model {model} '
      f'(input {next(iter(models.values())).input_size} px)')

  rows = [[label, f'{time_per_face(m.predict, faces[:100]):.2f}']
          for label, m in models.items()]
  if dlib_predict:
    rows.append(['dlib shape predictor, 1 thread',
                 f'{time_per_face(dlib_predict, faces[:100]):.2f}'])
  log(timing.table('\nLandmark time per face, batch 1 (crop + network)',
            ['model', 'median ms'], rows))
  if dlib_skipped:
    log(dlib_skipped)

  true = [points for _, _, points in faces]
  rows = []
  for label, m in models.items():
    if label.endswith(f', {threads[0]} thread(s)'):
      predicted = [m.predict(image, box[None])[0] for image, box, _ in faces]
      rows.append([label.rsplit(',', 1)[0] + ', tight box',
                   f'{nme_percent(predicted, true):.2f}'])
  if dlib_predict:
    tight = [dlib_predict(image, box[None])[0] for image, box, _ in faces]
    rows.append(['dlib, tight box', f'{nme_percent(tight, true):.2f}'])
    matches = [best_match(dlib_predict.detect(image), box)
               for image, box, _ in faces]
    found = [i for i, b in enumerate(matches) if b is not None]
    if found:
      own = [dlib_predict(faces[i][0], matches[i][None])[0] for i in found]
      rows.append([f'dlib, own HOG box ({len(found)}/{len(faces)} found)',
                   f'{nme_percent(own, [true[i] for i in found]):.2f}'])
      same = nme_percent([tight[i] for i in found], [true[i] for i in found])
      rows.append([f'dlib, tight box, same {len(found)} faces', f'{same:.2f}'])
  log(timing.table(f'\nNME % (outer eye corners) on {len(faces)} faces',
            ['model', 'NME %'], rows))
  if dlib_predict:
    log(f'Note: {DLIB_MODEL} was trained on iBUG 300-W: on its training '
        'images (AFW, HELEN and LFPW trainsets) its NME is optimistic.')

  try:
    haar = detectors.haar_detector()
  except WebcamError as e:
    haar = None
    log(f'\nEnd-to-end skipped for ours: {e}')
  image, _, points = faces[0]
  frames = synthetic_video(image, points, video_frames)
  rows = []
  if haar:
    for label, m in models.items():
      if label.endswith(f', {threads[-1]} thread(s)'):
        fps, found = end_to_end_fps(
            lambda frame: haar(frame).boxes,
            lambda im, b, m=m: m.predict(im, b, refine=True), frames)
        rows.append([label + ', Haar + 2 passes', f'{fps:.1f}',
                     f'{found}/{len(frames)}'])
  if dlib_predict:
    fps, found = end_to_end_fps(dlib_predict.detect, dlib_predict, frames)
    rows.append(['dlib HOG detector + shape predictor', f'{fps:.1f}',
                 f'{found}/{len(frames)}'])
  log(timing.table(f'\nEnd to end, {VIDEO_SIZE[0]}x{VIDEO_SIZE[1]} video, one face',
            ['pipeline', 'FPS', 'frames with a face'], rows))


FLAGS = flags.FLAGS
flags.DEFINE_string('model', None, 'Export folder (export.py).')
flags.DEFINE_string('data_dir', '../shared/data/300w-sample',
                    'Raw 300-W folder with real faces.')
flags.DEFINE_integer('max_faces', 400, 'Faces for NME (timing uses 100); 0: '
                     'all.')
flags.DEFINE_list('threads', ['1', '2'], 'Thread counts to time.')
flags.DEFINE_integer('video_frames', 60, 'Frames of the end-to-end video.')
flags.DEFINE_string('dlib_model', None, f'Path of {DLIB_MODEL} (default: '
                    'face-recognition-models or Debian\'s libdlib-data).')
flags.mark_flag_as_required('model')


def main(argv):
  del argv
  bench(FLAGS.model, FLAGS.data_dir, FLAGS.max_faces,
        tuple(int(t) for t in FLAGS.threads), FLAGS.video_frames,
        FLAGS.dlib_model)


if __name__ == '__main__':
  app.run(main)
