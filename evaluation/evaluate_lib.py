"""Scores a model on 300-W faces: NME, failure rates, AUC and CED, per subset.

`evaluate(EvalConfig(...))` is what evaluate.py runs; `predict_samples` is the
one loop from Samples to per-face errors that export's comparison reuses.
"""

import dataclasses
import os
from typing import Optional

import numpy as np
import tqdm

from facelandmark.config_flags import option
from evaluation import photos as photos_lib
from evaluation import report as report_lib
from evaluation import samples as samples_lib
from facelandmark import detectors
from model import landmarker as landmarker_lib
from model import metrics
from pipeline import sources
from pipeline import views
from training import workdir as workdir_lib


@dataclasses.dataclass
class EvalConfig:
  data_dir: str = option(help='Prepared shards or a raw 300-W folder (dlib '
                         'XML or .pts).')
  output_dir: Optional[str] = option(None, 'Where report.json, ced.png and '
                                     'overlays/ go (default: only print the '
                                     'table).', group='output')
  workdir: Optional[str] = option(None, 'Training workdir to evaluate.',
                                  group='model')
  model: Optional[str] = option(None, 'Or an export: its folder or one of its '
                                '.tflite files (default without --workdir: '
                                'the shipped model, pretrained/).',
                                group='model')
  detector: Optional[str] = option(
      None, 'Photo mode on a raw folder: find the faces with this detector '
      'on each whole photo (match IoU of landmark boxes >= '
      f'{photos_lib.MATCH_IOU}); misses count as failures. Default: the '
      'tight-box protocol (--box).', detectors.DETECTORS, group='model')
  checkpoint: str = option('best', 'With --workdir: which checkpoint.',
                           tuple(workdir_lib.CHECKPOINT_CHOICES), group='model')
  split: Optional[str] = option(
      None, 'Shards: the split (default val). Raw folder (required there): '
      'val, train or all, as `pipeline.prepare` splits it; a model prepared '
      'from the folder trained on its train photos.', group='data')
  layout: str = option('auto', 'Raw folder: annotation layout.',
                       sources.LAYOUTS, group='data')
  box: str = option('landmarks', 'Face box given to the model: the tight '
                    'landmark box (300-W) or the annotated one.', views.BOXES,
                    group='data')
  normalization: str = option('outer_eye', 'NME normalising distance.',
                              metrics.NORMALIZATIONS, group='output')
  refine: bool = option(
      False, "Refine passes on the previous pass's landmark box until it "
      'settles (off: on the validation photos the shipped model scores better '
      'without, from BlazeFace boxes too; README).', group='model')
  flip: bool = option(False, 'Test-time flip: average with the prediction '
                      'on the mirrored view (twice the network time).',
                      group='model')
  overlays: int = option(0, 'Draw this many faces with true and predicted '
                         'points (needs --output_dir).', group='output')
  num_threads: Optional[int] = option(None, 'TF Lite interpreter threads.',
                                      group='model')


@dataclasses.dataclass
class Results:
  """Per face, in sample order."""
  predicted: np.ndarray  # [N, 68, 2]
  true: np.ndarray       # [N, 68, 2]
  nme: np.ndarray        # [N]
  subsets: list
  sources: list
  kept: list             # the first samples, for overlays


def predict_samples(landmarker, samples, refine=False,
                    normalization='outer_eye', keep=0, flip=False):
  """Runs the landmarker on every face; keeps the samples of `keep` faces."""
  predicted, true, subsets, names, kept = [], [], [], [], []
  for sample in samples:
    if len(true) < keep:
      kept.append(sample)
    predicted.extend(landmarker.predict(sample.image, sample.boxes, refine,
                                        flip))
    true.extend(sample.landmarks)
    subsets += [sample.subset] * len(sample.landmarks)
    names += [sample.source] * len(sample.landmarks)
  if not true:
    raise ValueError('no faces to evaluate')
  predicted, true = np.array(predicted), np.array(true)
  errors = metrics.nme(predicted, true, normalization).numpy()
  return Results(predicted, true, errors, subsets, names, kept)


def load_landmarker(workdir=None, model=None, checkpoint='best',
                    num_threads=None):
  """A Landmarker from a training workdir or an export (default: the shipped
  model); a name for reports."""
  if workdir and model:
    raise ValueError('pass one of --workdir and --model, not both')
  if not workdir:
    model = model or landmarker_lib.SHIPPED_MODEL
    landmarker = landmarker_lib.Landmarker.load(model, num_threads)
    return landmarker, landmarker.metadata.get('path', model)
  keras_model, cfg, path = workdir_lib.restore_model(workdir, checkpoint)
  return (landmarker_lib.Landmarker.from_keras(keras_model, cfg.input_size,
                                               cfg.view_scale), path)


def _check_config(cfg):
  """Flag values checked before any model or image is read."""
  for name, allowed in (
      ('normalization', metrics.NORMALIZATIONS), ('box', views.BOXES),
      ('layout', sources.LAYOUTS), ('detector', (None,) + detectors.DETECTORS),
      ('checkpoint', tuple(workdir_lib.CHECKPOINT_CHOICES))):
    if getattr(cfg, name) not in allowed:
      raise ValueError(f'--{name} must be one of {allowed}, got '
                       f'{getattr(cfg, name)!r}')
  if cfg.overlays < 0:
    raise ValueError(f'--overlays must not be negative, got {cfg.overlays}')
  if cfg.overlays and not cfg.output_dir:
    raise ValueError('--overlays needs --output_dir')
  if cfg.detector and cfg.overlays:
    raise ValueError('--overlays draws the tight-box protocol: drop '
                     '--detector or --overlays')
  if cfg.detector and samples_lib.is_prepared(cfg.data_dir):
    raise ValueError(f'--detector needs whole photos: --data_dir '
                     f'{cfg.data_dir} holds prepared face crops; pass the raw '
                     '300-W folder')
  if cfg.split is None and not samples_lib.is_prepared(cfg.data_dir):
    # Its split is known (dlib's XML pair or prepare's hash of each path):
    # defaulting to all would score a model on the photos it trained on.
    raise ValueError(f'--split is required for a raw folder ({cfg.data_dir}): '
                     '--split=val scores the photos `pipeline.prepare` keeps '
                     'out of training; --split=all or train include those a '
                     'model prepared from this folder trained on')


def _prepare_output(output_dir):
  """Creates --output_dir before the long work; refuses what cannot be one."""
  if output_dir is None:
    return
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise ValueError(f'--output_dir {output_dir} is a file, not a folder')
  try:
    os.makedirs(output_dir, exist_ok=True)
  except OSError as e:
    raise OSError(f'--output_dir {output_dir}: cannot create it '
                  f'({e.strerror or e})') from e
  if not os.access(output_dir, os.W_OK):
    raise OSError(f'--output_dir {output_dir} is not writable')


def evaluate(cfg, log=print, progress=False):
  """Evaluates; writes report.json, ced.png and overlays when cfg.output_dir;
  returns the report."""
  _check_config(cfg)
  _prepare_output(cfg.output_dir)
  landmarker, model_name = load_landmarker(cfg.workdir, cfg.model,
                                           cfg.checkpoint, cfg.num_threads)
  if samples_lib.is_prepared(cfg.data_dir):
    split = cfg.split or 'val'
    samples = samples_lib.shard_samples(cfg.data_dir, split, cfg.box)
  else:
    split = cfg.split
    samples = samples_lib.folder_samples(cfg.data_dir, split, cfg.layout,
                                         cfg.box, log)
  refine = cfg.refine
  if cfg.detector:
    results = photos_lib.photo_results(
        landmarker, detectors.make_detector(cfg.detector, cfg.num_threads),
        tqdm.tqdm(samples, unit='photo', disable=not progress), refine,
        cfg.normalization, cfg.flip)
    found = results.found
  else:
    results = predict_samples(landmarker, tqdm.tqdm(
        samples, unit='image', disable=not progress), refine,
                              cfg.normalization, keep=cfg.overlays,
                              flip=cfg.flip)
    found = None
  masks = report_lib.groups(results.subsets)
  group_summaries = {name: report_lib.summarize(
      results.nme[mask], None if found is None else found[mask])
                     for name, mask in masks.items()}
  report = {
      'model': model_name,
      'data_dir': os.path.abspath(cfg.data_dir),
      'split': split,
      'protocol': (f'photos, detector {cfg.detector}, match IoU >= '
                   f'{photos_lib.MATCH_IOU}' if cfg.detector
                   else f'given boxes: {cfg.box}'),
      'box': None if cfg.detector else cfg.box,
      'detector': cfg.detector,
      'normalization': cfg.normalization,
      'refine': refine,
      'flip': cfg.flip,
      'groups': group_summaries,
      # A missed face (photo mode) has no NME: null.
      'faces': [{'source': s, 'subset': g,
                 'nme': float(e) if np.isfinite(e) else None}
                for s, g, e in zip(results.sources, results.subsets,
                                   results.nme)],
  }
  log(report_lib.format_table(group_summaries))
  if cfg.detector:
    report['unmatched_detections'] = sum(p['unmatched']
                                         for p in results.photos)
    report['photos'] = results.photos
    log(photos_lib.unmatched_line(results.photos))
  if cfg.output_dir:
    workdir_lib.write_json(os.path.join(cfg.output_dir, 'report.json'),
                           report)
    report_lib.plot_ced({name: results.nme[mask]
                         for name, mask in masks.items()},
                        os.path.join(cfg.output_dir, 'ced.png'),
                        f'CED, {cfg.normalization} NME: '
                        f'{os.path.basename(model_name)}')
    if cfg.overlays:
      report_lib.write_overlays(results, cfg.overlays,
                                os.path.join(cfg.output_dir, 'overlays'))
    log(f'Wrote {cfg.output_dir}/report.json and ced.png')
  return report
