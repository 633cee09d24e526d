"""How well the tracker's untrained "gone" test (tracking.looks_lost: the
landmark box of one pass on a track's box shrinks, grows or jumps) tells a
face from no face, on held-out 300-W faces.

  python -m bench.bench_presence [--data_dir=../shared/data/300w-photos] \
      [--split=val]

For every annotated face of the split, the shipped landmarker runs once on
a box and looks_lost judges its points, as the tracker does each frame:
  face: the tight landmark box (a followed face);
  face moved 10%: that box shifted by a tenth of its size (a face moving);
  grey over face: the box on the photo with the face's square (1.3 x the
    box) painted its mean colour (the face gone, the scene still there);
  background beside: the box moved 1.5 box sizes left or right, where it
    fits in the photo (the track on background).
It prints the share said gone (the first two should be 0, the last two
100%). A learned presence score (a head trained on face vs shifted or
background views, as MediaPipe's face mesh has) would be the measured
alternative; it is not built (it needs training).
"""

from absl import app
from absl import flags
import numpy as np

from bench import timing
from facelandmark import geometry
from facelandmark import landmarker as landmarker_lib
from facelandmark import tracking
from pipeline import sources


def gone(landmarker, rgb, box):
  (points,) = landmarker.predict(np.ascontiguousarray(rgb), box[None])
  return tracking.looks_lost(box, points, rgb.shape[:2]) is not None


def cases(rgb, box):
  """{case: (image, box) or None} for one face (module docstring)."""
  height, width = rgb.shape[:2]
  size = tracking.box_sizes(box)
  across = np.array([1.0, 0.0, 1.0, 0.0]) * size
  grey = rgb.copy()
  x0, y0, x1, y1 = (int(v) for v in geometry.square_around(box, 1.3))
  grey[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = rgb.reshape(
      -1, 3).mean(axis=0).astype(np.uint8)
  beside = [box + k * across for k in (1.5, -1.5)]
  beside = [b for b in beside if b[0] >= 0 and b[2] <= width]
  return {'face': (rgb, box), 'face moved 10%': (rgb, box + 0.1 * across),
          'grey over face': (grey, box),
          'background beside': (rgb, beside[0]) if beside else None}


def bench(data_dir, split, log=print):
  dataset = sources.load(data_dir, 'pts')
  faces = dataset.val if split == 'val' else dataset.train
  landmarker = landmarker_lib.Landmarker.load(num_threads=1)
  said = {}
  for face in faces:
    rgb = sources.read_image(face.image_path)[..., ::-1].copy()
    for case, given in cases(rgb, face.box).items():
      if given is not None:
        said.setdefault(case, []).append(gone(landmarker, *given))
  rows = [[case, len(v), f'{100 * np.mean(v):.1f}%'] for case, v in
          said.items()]
  log(timing.table(f'looks_lost on {split} faces of {data_dir} (one pass '
                   'of the shipped model)', ['case', 'faces', 'said gone'],
                   rows))


FLAGS = flags.FLAGS
flags.DEFINE_string('data_dir', '../shared/data/300w-photos', '300-W photos '
                    'with .pts files.')
flags.DEFINE_enum('split', 'val', ['val', 'train'], 'Which faces.')


def main(argv):
  del argv
  bench(FLAGS.data_dir, FLAGS.split)


if __name__ == '__main__':
  app.run(main)
