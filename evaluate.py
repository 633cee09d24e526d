"""Scores a model on 300-W: NME, failure rates, AUC and CED, per subset.

  python evaluate.py --workdir=RUN --data_dir=DATA --output_dir=EVAL
  python evaluate.py --model=EXPORT[/landmarks_int8.tflite] --data_dir=300W \
      --output_dir=EVAL [--split=all] [--box=landmarks] [--overlays=20]

--data_dir is either prepared shards (a folder with manifest.json; --split
defaults to val) or a raw 300-W folder in the dlib XML or .pts layout (--split
defaults to all of its faces). Following 300-W, the model is given each face's
tight ground-truth landmark box (--box=landmarks); --box=annotation gives it the
box stored with the face instead (dlib's box in the XML layout).

Groups: every subset present (e.g. afw, helen/trainset, ibug) and 300-W's common
(lfpw/testset + helen/testset), challenging (ibug) and full (both) subsets when
their faces are there. Writes report.json, ced.png and optional overlays/.
The metric definitions live in model/metrics.py.
"""

import dataclasses
import itertools
import json
import os
import sys

from absl import app
from absl import flags
import cv2
import matplotlib
matplotlib.use('Agg')  # Files only: no display needed.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

import train_loop
from model import landmarker as landmarker_lib
from model import metrics
from pipeline import geometry
from pipeline import reader
from pipeline import records
from pipeline import sources

BOXES = ('landmarks', 'annotation')
COMMON = ('lfpw/testset', 'helen/testset')
CHALLENGING = ('ibug',)
AUC_THRESHOLD = 0.08
FAILURE_THRESHOLDS = (0.08, 0.10)
CED_LIMIT = 0.10  # The plot's NME axis.
OVERLAY_SIZE = 256
OVERLAY_SCALE = 1.6  # Overlay side / face box side.


@dataclasses.dataclass
class Sample:
  """One image and the annotated faces on it."""
  image: np.ndarray      # uint8 RGB [H, W, 3]
  boxes: np.ndarray      # [K, 4] the boxes the model is given
  landmarks: np.ndarray  # [K, 68, 2] ground truth, corner coordinates
  subset: str
  source: str


@dataclasses.dataclass
class Results:
  """Per face, in sample order."""
  predicted: np.ndarray  # [N, 68, 2]
  true: np.ndarray       # [N, 68, 2]
  nme: np.ndarray        # [N]
  subsets: list
  sources: list
  kept: list             # the first samples, for overlays


def _box(landmarks, annotated, box):
  if box not in BOXES:
    raise ValueError(f'--box must be one of {BOXES}, got {box!r}')
  return geometry.landmark_box(landmarks) if box == 'landmarks' else annotated


def shard_samples(data_dir, split, box='landmarks', batch_size=64):
  """One Sample per stored face crop of a prepared dataset."""
  for batch in reader.make_dataset(data_dir, split, batch_size, training=False):
    batch = {k: v.numpy() for k, v in batch.items()}
    for i in range(len(batch['image'])):
      landmarks = batch['landmarks'][i].astype(np.float64)
      yield Sample(batch['image'][i],
                   _box(landmarks, batch['box'][i], box)[None],
                   landmarks[None], batch['subset'][i].decode(),
                   f'{batch["source"][i].decode()}#{batch["face_index"][i]}')


def folder_samples(data_dir, split='all', layout='auto', box='landmarks',
                   log=print):
  """One Sample per image of a raw 300-W folder; skips unreadable images."""
  dataset = sources.load(data_dir, layout)
  faces = {'all': dataset.train + dataset.val, 'train': dataset.train,
           'val': dataset.val}.get(split)
  if faces is None:
    raise ValueError(f'--split for a raw folder: all, train or val; got '
                     f'{split!r}')
  by_image = {}
  for face in faces:
    by_image.setdefault(face.image_path, []).append(face)
  for path, image_faces in sorted(by_image.items()):
    try:
      image = sources.read_image(path)
    except sources.BadImage as e:
      log(f'Skipped {path}: {e}')
      continue
    yield Sample(cv2.cvtColor(image, cv2.COLOR_BGR2RGB),
                 np.array([_box(f.landmarks, f.box, box) for f in image_faces]),
                 np.array([f.landmarks for f in image_faces]),
                 image_faces[0].subset, image_faces[0].rel_path)


def is_prepared(data_dir):
  return os.path.isfile(os.path.join(data_dir, records.MANIFEST))


def predict_samples(landmarker, samples, refine=False,
                    normalization='outer_eye', keep=0):
  """Runs the landmarker on every face; keeps the samples of `keep` faces."""
  predicted, true, subsets, names, kept = [], [], [], [], []
  for sample in samples:
    if len(true) < keep:
      kept.append(sample)
    predicted.extend(landmarker.predict(sample.image, sample.boxes, refine))
    true.extend(sample.landmarks)
    subsets += [sample.subset] * len(sample.landmarks)
    names += [sample.source] * len(sample.landmarks)
  if not true:
    raise ValueError('no faces to evaluate')
  predicted, true = np.array(predicted), np.array(true)
  errors = metrics.nme(predicted, true, normalization).numpy()
  return Results(predicted, true, errors, subsets, names, kept)


def groups(subsets):
  """{group name: face mask}: all, each subset, then 300-W's groups present."""
  subsets = np.array(subsets)
  masks = {'all': np.ones(len(subsets), bool)}
  masks.update({s: subsets == s for s in sorted(set(subsets))})
  common, challenging = np.isin(subsets, COMMON), np.isin(subsets, CHALLENGING)
  if common.any():
    masks['300w_common'] = common
  if challenging.any():
    masks['300w_challenging'] = challenging
  if common.any() and challenging.any():
    masks['300w_full'] = common | challenging
  return masks


def summarize(errors):
  summary = {'faces': int(len(errors)), 'nme': float(np.mean(errors)),
             'nme_median': float(np.median(errors))}
  for threshold in FAILURE_THRESHOLDS:
    summary[f'failure_rate_{threshold:.2f}'] = metrics.failure_rate(errors,
                                                                   threshold)
  summary[f'auc_{AUC_THRESHOLD:.2f}'] = metrics.auc(errors, AUC_THRESHOLD)
  return summary


def format_table(group_summaries):
  fr = [f'FR@{t:.2f} %' for t in FAILURE_THRESHOLDS]
  lines = [f'{"group":<22} {"faces":>6} {"NME %":>7} {fr[0]:>10} {fr[1]:>10} '
           f'{f"AUC@{AUC_THRESHOLD:.2f}":>9}']
  for name, s in group_summaries.items():
    rates = [100 * s[f'failure_rate_{t:.2f}'] for t in FAILURE_THRESHOLDS]
    lines.append(f'{name:<22} {s["faces"]:>6} {100 * s["nme"]:>7.3f} '
                 f'{rates[0]:>10.2f} {rates[1]:>10.2f} '
                 f'{s[f"auc_{AUC_THRESHOLD:.2f}"]:>9.4f}')
  return '\n'.join(lines)


def plot_ced(errors_by_group, path, title):
  figure, axes = plt.subplots(figsize=(7, 5))
  for name, errors in errors_by_group.items():
    x, y = metrics.ced(errors, CED_LIMIT)
    auc = metrics.auc(errors, AUC_THRESHOLD)
    axes.plot(100 * x, y, label=f'{name} (AUC@{AUC_THRESHOLD:.2f} {auc:.3f})')
  axes.set(xlabel='NME (%)', ylabel='fraction of faces',
           xlim=(0, 100 * CED_LIMIT), ylim=(0, 1), title=title)
  axes.grid(alpha=0.3)
  axes.legend(loc='lower right', fontsize='small')
  figure.savefig(path, dpi=100, bbox_inches='tight')
  plt.close(figure)


def write_overlays(results, count, folder):
  """Face crops with the true (green) and predicted (red) points, as PNGs."""
  os.makedirs(folder, exist_ok=True)
  faces = ((sample.image, true) for sample in results.kept
           for true in sample.landmarks)
  for i, (image, true) in enumerate(itertools.islice(faces, count)):
    square = geometry.square_around(geometry.landmark_box(true), OVERLAY_SCALE)
    (view,) = landmarker_lib.crop_views(image, [square], OVERLAY_SIZE)
    drawn = train_loop.draw_landmarks(
        view, geometry.to_crop(true, square, 1.0),
        geometry.to_crop(results.predicted[i], square, 1.0))
    name = (f'{i:04d}_{results.subsets[i].replace("/", "_")}_'
            f'nme{100 * results.nme[i]:.1f}.png')
    cv2.imwrite(os.path.join(folder, name), cv2.cvtColor(drawn,
                                                         cv2.COLOR_RGB2BGR))


def load_landmarker(workdir=None, model=None, checkpoint='best',
                    num_threads=None):
  """A Landmarker from a training workdir or an export; a name for reports."""
  if bool(workdir) == bool(model):
    raise ValueError('pass exactly one of --workdir and --model')
  if model:
    return landmarker_lib.Landmarker.load(model, num_threads), model
  keras_model, cfg, path = train_loop.restore_model(workdir, checkpoint)
  return (landmarker_lib.Landmarker.from_keras(keras_model, cfg.input_size,
                                               cfg.view_scale), path)


def evaluate(data_dir, output_dir, *, workdir=None, model=None,
             checkpoint='best', split=None, layout='auto', box='landmarks',
             normalization='outer_eye', refine=False, overlays=0,
             num_threads=None, log=print):
  """Evaluates, writes report.json, ced.png and overlays; returns the report."""
  if normalization not in metrics.NORMALIZATIONS:
    raise ValueError(f'--normalization must be one of {metrics.NORMALIZATIONS}'
                     f', got {normalization!r}')
  landmarker, model_name = load_landmarker(workdir, model, checkpoint,
                                           num_threads)
  if is_prepared(data_dir):
    split = split or 'val'
    samples = shard_samples(data_dir, split, box)
  else:
    split = split or 'all'
    samples = folder_samples(data_dir, split, layout, box, log)
  results = predict_samples(landmarker, samples, refine, normalization,
                            keep=overlays)
  masks = groups(results.subsets)
  group_summaries = {name: summarize(results.nme[mask])
                     for name, mask in masks.items()}
  report = {
      'model': model_name,
      'data_dir': os.path.abspath(data_dir),
      'split': split,
      'box': box,
      'normalization': normalization,
      'refine': refine,
      'groups': group_summaries,
      'faces': [{'source': s, 'subset': g, 'nme': float(e)}
                for s, g, e in zip(results.sources, results.subsets,
                                   results.nme)],
  }
  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, 'report.json'), 'w',
            encoding='utf-8') as f:
    json.dump(report, f, indent=2)
  plot_ced({name: results.nme[mask] for name, mask in masks.items()},
           os.path.join(output_dir, 'ced.png'),
           f'CED, {normalization} NME: {os.path.basename(model_name)}')
  if overlays:
    write_overlays(results, overlays, os.path.join(output_dir, 'overlays'))
  log(format_table(group_summaries))
  log(f'Wrote {output_dir}/report.json and ced.png')
  return report


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('workdir', None, 'Training workdir to evaluate.')
  flags.DEFINE_string('model', None, 'Or an export: its folder (SavedModel) '
                      'or one of its .tflite files.')
  flags.DEFINE_enum('checkpoint', 'best', ['best', 'latest'],
                    'With --workdir: which checkpoint.')
  flags.DEFINE_string('data_dir', None, 'Prepared shards or a raw 300-W '
                      'folder (dlib XML or .pts).')
  flags.DEFINE_string('output_dir', None, 'Where report.json, ced.png and '
                      'overlays/ go.')
  flags.DEFINE_string('split', None, 'Shards: the split (default val). Raw '
                      'folder: all (default), train or val.')
  flags.DEFINE_enum('layout', 'auto', sources.LAYOUTS,
                    'Raw folder: annotation layout.')
  flags.DEFINE_enum('box', 'landmarks', BOXES, 'Face box given to the model: '
                    'the tight landmark box (300-W) or the annotated one.')
  flags.DEFINE_enum('normalization', 'outer_eye', metrics.NORMALIZATIONS,
                    'NME normalising distance.')
  flags.DEFINE_bool('refine', False, 'Second pass on the first pass\'s '
                    'landmark box.')
  flags.DEFINE_integer('overlays', 0, 'Draw this many faces with true and '
                       'predicted points.')
  flags.DEFINE_integer('num_threads', None, 'TF Lite interpreter threads.')
  flags.mark_flags_as_required(['data_dir', 'output_dir'])


def main(argv):
  del argv
  try:
    evaluate(FLAGS.data_dir, FLAGS.output_dir, workdir=FLAGS.workdir,
             model=FLAGS.model, checkpoint=FLAGS.checkpoint, split=FLAGS.split,
             layout=FLAGS.layout, box=FLAGS.box,
             normalization=FLAGS.normalization, refine=FLAGS.refine,
             overlays=FLAGS.overlays, num_threads=FLAGS.num_threads)
  except (FileNotFoundError, ValueError, sources.DataError) as e:
    sys.exit(f'evaluate: {e}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
