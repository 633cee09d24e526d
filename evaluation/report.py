"""Evaluation results as numbers, a table, a CED plot and drawn faces.

The metric definitions live in model/metrics.py.
"""

import itertools
import os

import cv2
import matplotlib
matplotlib.use('Agg')  # Files only: no display needed.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from model import metrics
from facelandmark import drawing
from facelandmark import geometry
from facelandmark import views

COMMON = ('lfpw/testset', 'helen/testset')
CHALLENGING = ('ibug',)
AUC_THRESHOLD = 0.08
FAILURE_THRESHOLDS = (0.08, 0.10)
CED_LIMIT = 0.10  # The plot's NME axis.
OVERLAY_SIZE = 256
OVERLAY_SCALE = 1.6  # Overlay side / face box side.


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


def summarize(errors, found=None):
  """NME (mean, median), failure rates and AUC of per-face errors.

  With `found` (bool per face, photo mode: errors of missed faces are inf),
  also the found count; NME is then over found faces, while failure rates and
  AUC count the missed ones as failures. No found face: NME None (JSON null).
  """
  errors = np.asarray(errors, np.float64)
  scored = errors if found is None else errors[found]
  summary = {'faces': int(len(errors))}
  if found is not None:
    summary['found'] = int(np.sum(found))
  summary.update(
      nme=float(np.mean(scored)) if scored.size else None,
      nme_median=float(np.median(scored)) if scored.size else None)
  for threshold in FAILURE_THRESHOLDS:
    summary[f'failure_rate_{threshold:.2f}'] = metrics.failure_rate(errors,
                                                                   threshold)
  summary[f'auc_{AUC_THRESHOLD:.2f}'] = metrics.auc(errors, AUC_THRESHOLD)
  return summary


def format_table(group_summaries):
  fr = [f'FR@{t:.2f} %' for t in FAILURE_THRESHOLDS]
  photo = any('found' in s for s in group_summaries.values())
  found = f' {"found":>6}' if photo else ''
  lines = [f'{"group":<22} {"faces":>6}{found} {"NME %":>7} {fr[0]:>10} '
           f'{fr[1]:>10} {f"AUC@{AUC_THRESHOLD:.2f}":>9}']
  for name, s in group_summaries.items():
    rates = [100 * s[f'failure_rate_{t:.2f}'] for t in FAILURE_THRESHOLDS]
    found = f' {s["found"]:>6}' if photo else ''
    nme = '-' if s['nme'] is None else f'{100 * s["nme"]:.3f}'
    lines.append(f'{name:<22} {s["faces"]:>6}{found} {nme:>7} '
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
    (view,) = views.crop_views(image, [square], OVERLAY_SIZE)
    drawn = drawing.draw_landmarks(
        view, geometry.to_crop(true, square, 1.0),
        geometry.to_crop(results.predicted[i], square, 1.0))
    name = (f'{i:04d}_{results.subsets[i].replace("/", "_")}_'
            f'nme{100 * results.nme[i]:.1f}.png')
    cv2.imwrite(os.path.join(folder, name), cv2.cvtColor(drawn,
                                                         cv2.COLOR_RGB2BGR))
