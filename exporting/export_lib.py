"""Exports a training workdir as a SavedModel and TF Lite files, and checks
every file on the same faces.

EXPORT/ then holds the SavedModel (exporting/saved_model.py), the chosen
landmarks_{float32,float16,int8}.tflite (exporting/tflite.py) and
metadata.json: input_size, view_scale, where the weights came from, and how
each file scored on the same faces. Coordinates are corner coordinates
(facelandmark/geometry.py). The export is written to a temporary folder and renamed
into place when complete; temporary folders of killed runs are removed.
"""

import dataclasses
import glob
import os
import re
import shutil
import tempfile
from typing import Optional

import numpy as np

from facelandmark.config_flags import option
from evaluation import evaluate_lib
from evaluation import samples as samples_lib
from exporting import saved_model as saved_model_lib
from exporting import tflite as tflite_lib
from facelandmark import landmarker as runtime
from model import landmarker as landmarker_lib
from training import workdir as workdir_lib

SYNTHETIC_FACES = 32  # Compared on when no --data_dir is given.


@dataclasses.dataclass
class ExportConfig:
  workdir: str = option(help='Training workdir (train_loop.py).')
  export_dir: str = option(help='Folder to create for the export.')
  tflite: tuple[str, ...] = option(
      (), f'TF Lite variants to add: {",".join(tflite_lib.TFLITE_VARIANTS)}.',
      group='output')
  checkpoint: str = option('best', 'Which checkpoint of the workdir.',
                           tuple(workdir_lib.CHECKPOINT_CHOICES), group='model')
  data_dir: Optional[str] = option(
      None, 'Prepared shards: int8 calibrates on its train views; every file '
      'is scored on its val split.', group='data')
  num_calibration: int = option(200, 'Views for int8 calibration.',
                                group='data')
  overwrite: bool = option(False, 'Replace an existing --export_dir.',
                           group='output')


def checkpoint_step(path):
  match = re.search(r'ckpt-(\d+)$', path)
  return int(match.group(1)) if match else None


def validation_nme(workdir, which, step):
  """The best checkpoint's validation NME, from the workdir's best.json."""
  best = workdir_lib.best_record(workdir) if which == 'best' else None
  return best.get('nme') if best and best.get('step') == step else None


def compare(files, samples):
  """NME of each exported file on the same faces, and how far its points are
  from the first file's (mean, in image pixels).

  `files`: {label: path}, the SavedModel first. Returns one dict per file.
  """
  samples = list(samples)
  rows, reference = [], None
  for label, path in files.items():
    result = evaluate_lib.predict_samples(
        landmarker_lib.Landmarker.load(path, prefer='saved_model'), samples)
    if reference is None:
      reference = result.predicted
    rows.append({
        'file': label,
        'bytes': _size(path),
        'nme': float(np.mean(result.nme)),
        'pixels_from_saved_model': float(np.mean(
            np.linalg.norm(result.predicted - reference, axis=-1))),
        'faces': len(result.nme),
    })
  return rows


def _size(path):
  if os.path.isfile(path):
    return os.path.getsize(path)
  return sum(os.path.getsize(os.path.join(folder, name))
             for folder, _, names in os.walk(path) for name in names)


def format_table(rows, faces_description):
  lines = [f'NME on {faces_description}:',
           f'{"file":<28} {"size":>10} {"NME %":>8} {"px from SavedModel":>19}']
  for row in rows:
    lines.append(f'{row["file"]:<28} {row["bytes"] / 2**20:>8.2f}MB '
                 f'{100 * row["nme"]:>8.3f} '
                 f'{row["pixels_from_saved_model"]:>19.4f}')
  return '\n'.join(lines)


def _check_args(cfg):
  unknown = sorted(set(cfg.tflite) - set(tflite_lib.TFLITE_VARIANTS))
  if unknown:
    raise ValueError(f'--tflite: unknown variant(s) {unknown}; choose from '
                     f'{", ".join(tflite_lib.TFLITE_VARIANTS)}')
  if 'int8' in cfg.tflite and not cfg.data_dir:
    raise ValueError('--tflite=int8 needs --data_dir: full-integer '
                     'quantization calibrates on real training views')
  if cfg.checkpoint not in workdir_lib.CHECKPOINT_CHOICES:
    raise ValueError(f'--checkpoint must be one of '
                     f'{tuple(workdir_lib.CHECKPOINT_CHOICES)}, got '
                     f'{cfg.checkpoint!r}')
  if cfg.num_calibration < 1:
    raise ValueError(f'--num_calibration must be positive, got '
                     f'{cfg.num_calibration}')
  export_dir = os.path.abspath(cfg.export_dir)
  if os.path.exists(export_dir) and not cfg.overwrite:
    raise FileExistsError(f'--export_dir {export_dir} exists; pass --overwrite '
                          'to replace it')
  parent = os.path.dirname(export_dir)
  if os.path.exists(parent) and not os.path.isdir(parent):
    raise ValueError(f'--export_dir {export_dir}: {parent} is a file')


def _temp_prefix(export_dir, kind):
  return os.path.join(os.path.dirname(export_dir),
                      f'.{os.path.basename(export_dir)}.{kind}-')


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def remove_stale_temps(export_dir, log=print):
  """Removes temporary folders that killed exports to `export_dir` left."""
  for kind in ('tmp', 'old'):
    for path in glob.glob(glob.escape(_temp_prefix(export_dir, kind)) + '*'):
      match = re.search(r'-(\d+)-[^-/]*$', path)
      if match and not _alive(int(match.group(1))):
        shutil.rmtree(path, ignore_errors=True)
        log(f'Removed {path}, left by an interrupted export.')


def _make_temp(export_dir, kind):
  return tempfile.mkdtemp(prefix=f'{os.path.basename(_temp_prefix(export_dir, kind))}'
                          f'{os.getpid()}-', dir=os.path.dirname(export_dir))


def _readable_by_all(folder):
  """mkdtemp makes 0700 folders; an export is read by other users (servers),
  so give it the permissions a plain mkdir would have."""
  umask = os.umask(0)
  os.umask(umask)
  for root, _, names in os.walk(folder):  # every folder is a root once
    os.chmod(root, 0o777 & ~umask)
    for name in names:
      os.chmod(os.path.join(root, name), 0o666 & ~umask)


def _replace(tmp, export_dir):
  """Moves the finished export into place; an old one goes only after that."""
  old = None
  if os.path.exists(export_dir):
    old = _make_temp(export_dir, 'old')
    os.rename(export_dir, os.path.join(old, 'export'))
  os.rename(tmp, export_dir)
  if old:
    shutil.rmtree(old)


def export(cfg, log=print):
  """Writes the export (see the module docstring); returns its metadata."""
  _check_args(cfg)
  export_dir = os.path.abspath(cfg.export_dir)
  model, train_cfg, path = workdir_lib.restore_model(cfg.workdir,
                                                     which=cfg.checkpoint)
  step = checkpoint_step(path)
  metadata = {
      'input_size': train_cfg.input_size,
      'view_scale': train_cfg.view_scale,
      'alpha': train_cfg.alpha,
      'head': train_cfg.head,
      'head_width': train_cfg.head_width,
      'workdir': os.path.abspath(cfg.workdir),
      'checkpoint': path,
      'step': step,
      'validation_nme': validation_nme(cfg.workdir, cfg.checkpoint, step),
      'coordinates': 'corner: pixel (i, j) covers [i, i+1) x [j, j+1)',
      'tflite_io': 'float32 [1, S, S, 3] in [0, 1] -> float32 [1, 68, 2] in '
                   '[0, 1], every variant',
  }
  os.makedirs(os.path.dirname(export_dir), exist_ok=True)
  remove_stale_temps(export_dir, log)
  tmp = _make_temp(export_dir, 'tmp')
  try:
    saved_model_lib.save_saved_model(model, train_cfg.input_size,
                                     train_cfg.view_scale, tmp)
    files = {'saved_model': tmp}

    def representative():
      return tflite_lib.representative_views(
          cfg.data_dir, train_cfg.input_size, train_cfg.view_scale,
          train_cfg.box, cfg.num_calibration)

    metadata_path = os.path.join(tmp, runtime.METADATA)
    workdir_lib.write_json(metadata_path, metadata)
    for variant in cfg.tflite:
      log(f'Converting to TF Lite {variant}...')
      flatbuffer = tflite_lib.convert_tflite(tmp, variant, representative)
      name = runtime.tflite_name(variant)
      files[name] = os.path.join(tmp, name)
      with open(files[name], 'wb') as f:
        f.write(flatbuffer)
    if cfg.data_dir:
      samples = samples_lib.shard_samples(cfg.data_dir, 'val', train_cfg.box)
      described = f'the validation shards of {cfg.data_dir}'
    else:
      samples = samples_lib.synthetic_samples(SYNTHETIC_FACES)
      described = (f'{SYNTHETIC_FACES} generated cartoon faces (pass '
                   '--data_dir for real ones)')
    rows = compare(files, samples)
    log(format_table(rows, described))
    metadata['comparison'] = {'faces': described, 'files': rows}
    workdir_lib.write_json(metadata_path, metadata)
    _readable_by_all(tmp)
    _replace(tmp, export_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  log(f'Exported {path} to {export_dir}')
  return metadata
