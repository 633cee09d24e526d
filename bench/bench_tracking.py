"""Landmark jitter on a still face and the webcam loop's frame rate, with and
without tracking and smoothing, side by side.

  python -m bench.bench_tracking [--data_dir=../shared/data/300w-photos] \
      [--photos=3] [--frames=150] [--num_threads=1]

Each clip is a 640x480 MJPG video at 30 frames/s of one photo (the bundled
public-domain one, and with --data_dir the first --photos photos there with
one annotated face), scaled to fit the frame: a face held still, swaying by
a known sub-pixel shift (two sines of 1 px amplitude, periods 3 s in x and
2.2 s in y, random phases; resampled bilinearly), with Gaussian noise (sigma
3 grey levels) and re-compressed per frame (JPEG quality 80, then the
video's own MJPG). Every configuration runs webcam.py's loop
(command.run, headless, JSON out) on the same clips:
  detect every frame (--notrack), without and with --smoothing;
  tracking (--detect_every=10), without and with --smoothing.

Both measures take each frame's points minus its known shift, in % of the
distance between the outer eye corners (points 36 and 45):
  jitter: frame to frame, the RMS over points and frames of the change in a
    point's position divided by sqrt(2) (for independent noise, its std);
  spread: the RMS distance of the points to their mean over the clip (jitter,
    plus any slow drift or lag behind the sway).
Frames without exactly one face are left out (and counted). FPS:
command.run's mean over every frame after the first (decode, detector,
landmarks, smoothing, JSON record; no drawing).
"""

import collections
import contextlib
import io
import json
import os
import tempfile

from absl import app
from absl import flags
import cv2
import numpy as np

from bench import timing
from facelandmark import command
from pipeline import sources

SIZE = (640, 480)
FPS = 30
SWAY = 1.0  # pixels
SWAY_PERIODS = (3.0, 2.2)  # seconds, x and y
NOISE = 3.0
JPEG_QUALITY = 80
PHOTO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), 'assets', 'eileen_collins_nasa.jpg')
CONFIGS = (
    ('detect every frame', dict(track=False, smoothing=False)),
    ('detect every frame + smoothing', dict(track=False, smoothing=True)),
    ('tracking, detect every 10', dict(track=True, smoothing=False)),
    ('tracking, detect every 10 + smoothing', dict(track=True,
                                                   smoothing=True)),
)


def one_face_photos(data_dir, count):
  """The first `count` photos (by path) of `data_dir` with one face."""
  dataset = sources.load(data_dir, 'pts')
  faces = collections.Counter(f.image_path for f in dataset.train +
                              dataset.val)
  return sorted(p for p, n in faces.items() if n == 1)[:count]


def fitted(image):
  """`image` scaled to fit SIZE, centred on black."""
  width, height = SIZE
  scale = min(width / image.shape[1], height / image.shape[0])
  matrix = np.array([[scale, 0, (width - scale * image.shape[1]) / 2],
                     [0, scale, (height - scale * image.shape[0]) / 2]])
  return cv2.warpAffine(image, matrix, SIZE, flags=cv2.INTER_AREA)


def sway(frames, rng):
  """[frames, 2] known shifts (x, y) in pixels."""
  t = np.arange(frames)[:, None] / FPS
  return SWAY * np.sin(2 * np.pi * t / np.array(SWAY_PERIODS) +
                       rng.uniform(0, 2 * np.pi, 2))


def write_clip(image, path, shifts, rng):
  """The clip of a still `image` moved by `shifts` [frames, 2]."""
  base = fitted(image).astype(np.float32)
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'MJPG'), FPS, SIZE)
  for dx, dy in shifts:
    moved = cv2.warpAffine(base, np.array([[1, 0, dx], [0, 1, dy]]), SIZE,
                           flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    noisy = np.clip(moved + rng.normal(0, NOISE, moved.shape), 0, 255)
    _, jpeg = cv2.imencode('.jpg', noisy.astype(np.uint8),
                           [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    writer.write(cv2.imdecode(jpeg, cv2.IMREAD_COLOR))
  writer.release()


def jitter_and_spread(frames, shifts):
  """(jitter, spread) in % of the eye distance, and the frames used, of
  JSON frame records (see the module docstring)."""
  used = [k for k, f in enumerate(frames) if len(f['faces']) == 1]
  if len(used) < 2:
    return float('nan'), float('nan'), len(used)
  points = np.array([frames[k]['faces'][0]['landmarks'] for k in used])
  still = points - shifts[used][:, None, :]
  mean = still.mean(axis=0)
  eye = np.linalg.norm(mean[36] - mean[45]) / 100
  # Consecutive frames only: a frame left out breaks the pair.
  pairs = np.flatnonzero(np.diff(used) == 1)
  steps = still[pairs + 1] - still[pairs]
  jitter = np.sqrt(np.mean(np.sum(steps**2, axis=2)) / 2)
  spread = np.sqrt(np.mean(np.sum((still - mean)**2, axis=2)))
  return jitter / eye, spread / eye, len(used)


def run_config(clip, options, num_threads, folder):
  """(JSON frame records, mean FPS) of command.run on `clip`."""
  landmarks = os.path.join(folder, 'faces.json')
  with contextlib.redirect_stderr(io.StringIO()):  # Its progress bar.
    summary = command.run(command.WebcamConfig(
        source=clip, json=landmarks, headless=True, num_threads=num_threads,
        **options), log=lambda *_: None)
  with open(landmarks, encoding='utf-8') as f:
    return json.load(f)['frames'], summary['fps']


def bench(data_dir=None, photos=3, frames=150, num_threads=1, log=print):
  """Writes the clips, runs every configuration on each, prints the table."""
  images = [('bundled photo', PHOTO)] + [
      (os.path.basename(p), p)
      for p in (one_face_photos(data_dir, photos) if data_dir else [])]
  rng = np.random.default_rng(0)
  results = {label: [] for label, _ in CONFIGS}  # [(jitter, spread, used, fps)]
  with tempfile.TemporaryDirectory() as folder:
    for _, path in images:
      clip, shifts = os.path.join(folder, 'clip.avi'), sway(frames, rng)
      write_clip(cv2.imread(path), clip, shifts, rng)
      for label, options in CONFIGS:
        records, fps = run_config(clip, options, num_threads, folder)
        results[label].append((*jitter_and_spread(records, shifts), fps))
  header = (['configuration'] + [f'jitter {name}' for name, _ in images] +
            ['jitter mean', 'spread mean', 'FPS mean', 'frames used'])
  rows = []
  for label, runs in results.items():
    jitters, spreads, used, fps = zip(*runs)
    rows.append([label, *(f'{j:.3f}' for j in jitters),
                 f'{np.nanmean(jitters):.3f}', f'{np.nanmean(spreads):.3f}',
                 f'{np.mean(fps):.1f}', f'{sum(used)}/{frames * len(images)}'])
  log(timing.table(
      f'Still face swaying {SWAY} px, noise {NOISE}, JPEG {JPEG_QUALITY}; '
      f'{frames} frames of {SIZE[0]}x{SIZE[1]} per clip, {num_threads} '
      'thread(s); jitter and spread in % of the outer-eye distance',
      header, rows))


FLAGS = flags.FLAGS
flags.DEFINE_string('data_dir', None, 'Photos with .pts files (300-W layout): '
                    'adds clips of its first --photos one-face photos.')
flags.DEFINE_integer('photos', 3, 'Photos taken from --data_dir.')
flags.DEFINE_integer('frames', 150, 'Frames per clip.')
flags.DEFINE_integer('num_threads', 1, 'TF Lite threads (landmarker and '
                     'detector).')


def main(argv):
  del argv
  bench(FLAGS.data_dir, FLAGS.photos, FLAGS.frames, FLAGS.num_threads)


if __name__ == '__main__':
  app.run(main)
