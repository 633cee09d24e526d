"""Landmark models side by side: file size and network time per face.

  python -m bench.bench_models --models=pretrained,exports/pip112 [--repeats=200]

Each model is a .tflite file or an export folder (its file Landmarker.load
picks); each runs on one thread (the speed budget of the shipped file), on
the same random views at its input size, batch 1. Prints a table: file, bytes,
input size, median and 90th-percentile ms per face, and the ratio of the
median to the first model's. Timings are medians over --repeats calls after
10 warm-up calls; the runtime (LiteRT or tf.lite) is the one the package uses.
"""

import os
import time

from absl import app
from absl import flags
import numpy as np

from facelandmark import landmarker as landmarker_lib

FLAGS = flags.FLAGS


def time_per_face(landmarker, repeats, warmup=10, seed=0):
  """(median, 90th percentile) ms of predict_views on one random view."""
  size = landmarker.input_size
  view = np.random.default_rng(seed).integers(0, 256, (1, size, size, 3),
                                              np.uint8)
  for _ in range(warmup):
    landmarker.predict_views(view)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    landmarker.predict_views(view)
    times.append(1000 * (time.perf_counter() - start))
  return float(np.median(times)), float(np.percentile(times, 90))


def rows(models, repeats):
  out = []
  for path in models:
    landmarker = landmarker_lib.Landmarker.load(path, num_threads=1)
    median, p90 = time_per_face(landmarker, repeats)
    out.append((landmarker.source, os.path.getsize(landmarker.source),
                landmarker.input_size, median, p90))
  return out


def table(measured):
  base = measured[0][3]
  lines = [f'{"model file":56} {"bytes":>10} {"input":>6} {"ms/face":>8} '
           f'{"p90 ms":>7} {"x first":>8}']
  for path, size, input_size, median, p90 in measured:
    lines.append(f'{path:56} {size:>10,} {input_size:>6} {median:>8.3f} '
                 f'{p90:>7.3f} {median / base:>8.2f}')
  return '\n'.join(lines)


def main(argv):
  del argv
  print(table(rows(FLAGS.models, FLAGS.repeats)))


if __name__ == '__main__':
  flags.DEFINE_list('models', [landmarker_lib.SHIPPED_MODEL],
                    'Export folders or .tflite files, compared with the first.')
  flags.DEFINE_integer('repeats', 200, 'Timed calls per model.')
  app.run(main)
