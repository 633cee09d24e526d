"""How well the pip head's cell scores predict each point's error.

  python -m bench.bench_pip_confidence --workdir=runs/pip112 [--data_dir=...]

On the validation shards (centred views on the training --box), each point's
confidence is its best cell's score and its error the distance to the truth
over the outer-eye distance. Prints, per group of points and for all: the
Spearman rank correlation of confidence with error (negative: confident
points err less), and the mean error of the least and most confident fifth;
then the same per face (mean score against the face's NME). A score worth
exposing ranks errors clearly (|rho| well above 0.1) and its bottom fifth
errs markedly more than its top fifth.
"""

from absl import app
from absl import flags
import numpy as np

from model import metrics
from model import network
from model import pip
from pipeline import augment
from pipeline import reader
from pipeline import views
from training import workdir as workdir_lib

FLAGS = flags.FLAGS
GROUPS = {'jaw': range(0, 17), 'brows': range(17, 27), 'nose': range(27, 36),
          'eyes': range(36, 48), 'mouth': range(48, 68)}


def scores_and_errors(workdir, data_dir=None):
  """Per point: best-cell scores [N, 68] and errors [N, 68] (outer-eye)."""
  model, cfg, _ = workdir_lib.restore_model(workdir)
  if cfg.head != 'pip':
    raise ValueError(f'{workdir}: --head={cfg.head}; only the pip head has '
                     'cell scores')
  maps_model = network.training_outputs(model, cfg.head)
  scores, errors = [], []
  for batch in reader.make_dataset(data_dir or cfg.data_dir, 'val', 64,
                                   training=False):
    boxes = views.face_boxes(batch['landmarks'], batch['box'], cfg.box)
    images, targets = augment.center_view(batch['image'], batch['landmarks'],
                                          boxes, cfg.input_size,
                                          cfg.view_scale)
    maps = maps_model(images, training=False)
    predicted = pip.PIPDecode()(maps).numpy().reshape(-1, 68, 2)
    cell_scores = pip.split_maps(maps)[0].numpy()  # [B, HW, K]
    scores.append(cell_scores.max(axis=1))
    distance = metrics.normalizing_distance(targets.numpy()).numpy()
    errors.append(np.linalg.norm(predicted - targets.numpy(), axis=-1)
                  / distance[:, None])
  return np.concatenate(scores), np.concatenate(errors)


def spearman(a, b):
  ranks = lambda v: np.argsort(np.argsort(v)).astype(np.float64)
  return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def fifths(confidence, error):
  order = np.argsort(confidence)
  n = max(1, len(order) // 5)
  return float(np.mean(error[order[:n]])), float(np.mean(error[order[-n:]]))


def table(scores, errors):
  lines = [f'{"points":8} {"n":>7} {"spearman":>9} {"err % least conf.":>18} '
           f'{"err % most conf.":>17}']
  for name, index in list(GROUPS.items()) + [('all', range(68))]:
    s, e = scores[:, index].ravel(), errors[:, index].ravel()
    low, high = fifths(s, e)
    lines.append(f'{name:8} {len(s):>7} {spearman(s, e):>9.3f} '
                 f'{100 * low:>18.2f} {100 * high:>17.2f}')
  s, e = scores.mean(axis=1), errors.mean(axis=1)
  low, high = fifths(s, e)
  lines.append(f'{"faces":8} {len(s):>7} {spearman(s, e):>9.3f} '
               f'{100 * low:>18.2f} {100 * high:>17.2f}')
  return '\n'.join(lines)


def main(argv):
  del argv
  print(table(*scores_and_errors(FLAGS.workdir, FLAGS.data_dir)))


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'A training workdir with --head=pip.')
  flags.DEFINE_string('data_dir', None, 'Prepared shards (default: the '
                      "workdir's --data_dir).")
  flags.mark_flag_as_required('workdir')
  app.run(main)
