"""A training workdir: its folder names, config, best record and restore.

  WORKDIR/config.json      the TrainConfig (training/config.py)
  WORKDIR/checkpoints/     the latest few checkpoints
  WORKDIR/best/            the checkpoint with the best validation NME, and
  WORKDIR/best/best.json   its step and NME
  WORKDIR/train/, val/     TensorBoard logs

Every reader and writer of a workdir takes these names from here.
"""

import dataclasses
import json
import os

from absl import logging
import tensorflow as tf

from model import network
from training import config as config_lib

CONFIG = 'config.json'
CHECKPOINTS = 'checkpoints'
BEST = 'best'
BEST_JSON = 'best.json'
TRAIN_LOGS = 'train'
VAL_LOGS = 'val'
# --checkpoint=NAME -> folder: 'latest' is the newest of checkpoints/.
CHECKPOINT_CHOICES = {'best': BEST, 'latest': CHECKPOINTS}
# The variable in every checkpoint holding the best validation NME so far.
BEST_NME_KEY = 'best_nme/.ATTRIBUTES/VARIABLE_VALUE'


def read_json(path):
  """A JSON file's object; ValueError naming the file if it is not one."""
  try:
    with tf.io.gfile.GFile(path) as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} is not valid JSON ({e}): a run was interrupted '
                     'while writing it, or it was edited') from e
  if not isinstance(data, dict):
    raise ValueError(f'{path}: expected a JSON object, got '
                     f'{type(data).__name__}')
  return data


def write_json(path, data):
  """Writes strict JSON (no NaN or Infinity, which jq and JavaScript reject:
  callers write null where there is no number), atomically: a reader sees
  the old file or the new one."""
  try:
    text = json.dumps(data, indent=2, allow_nan=False)
  except ValueError as e:
    raise ValueError(f'{path}: not written: {e} (a NaN or infinity where '
                     'JSON has no number)') from e
  tmp = path + '.tmp'
  with tf.io.gfile.GFile(tmp, 'w') as f:
    f.write(text)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def check_config(cfg):
  """On resume, refuses a config that changes the workdir's network."""
  path = os.path.join(cfg.workdir, CONFIG)
  if not tf.io.gfile.exists(path):
    return
  saved = read_json(path)
  for field in config_lib.ARCHITECTURE_FIELDS:
    if saved.get(field) != getattr(cfg, field):
      raise ValueError(
          f'--{field}={getattr(cfg, field)} differs from {saved.get(field)} '
          f'in {path}: a workdir cannot change its network; use a new '
          '--workdir')


def write_config(cfg):
  tf.io.gfile.makedirs(cfg.workdir)
  write_json(os.path.join(cfg.workdir, CONFIG), dataclasses.asdict(cfg))


def read_config(workdir):
  """The TrainConfig a workdir was trained with."""
  path = os.path.join(workdir, CONFIG)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f'{path} not found: --workdir is not a training '
                            'workdir')
  saved = read_json(path)
  known = {f.name for f in dataclasses.fields(config_lib.TrainConfig)}
  values = {k: tuple(v) if isinstance(v, list) else v
            for k, v in saved.items() if k in known}
  try:
    return config_lib.TrainConfig(**values)
  except TypeError as e:
    raise ValueError(f'{path}: not a training config ({e})') from e


def build_model(cfg, initialize=True, log=logging.info):
  """The network `cfg` describes; `initialize=False` skips looking for backbone
  weights (a checkpoint will overwrite them)."""
  init_weights = None
  if initialize:
    init_weights = network.resolve_init_weights(
        cfg.alpha, cfg.input_size, cfg.init_weights or None, log=log)
  return network.build_landmark_net(
      input_size=cfg.input_size, alpha=cfg.alpha, head=cfg.head,
      head_width=cfg.head_width, bn_momentum=cfg.bn_momentum,
      init_weights=init_weights)


def checkpoint_path(workdir, which='best'):
  """The checkpoint --checkpoint=`which` names; best falls back to latest
  (a run without validation keeps no best)."""
  if which not in CHECKPOINT_CHOICES:
    raise ValueError(f'--checkpoint must be one of {tuple(CHECKPOINT_CHOICES)}'
                     f', got {which!r}')
  folders = [CHECKPOINT_CHOICES[which]]
  if which == 'best':
    folders.append(CHECKPOINTS)
  for folder in folders:
    path = tf.train.latest_checkpoint(os.path.join(workdir, folder))
    if path:
      return path
  raise FileNotFoundError(f'no checkpoint in {os.path.join(workdir, folders[0])}'
                          ': train first (train_loop.py)')


def best_record(workdir):
  """best.json ({'step', 'nme', 'faces'}) or None when there is none."""
  path = os.path.join(workdir, BEST, BEST_JSON)
  return read_json(path) if tf.io.gfile.exists(path) else None


def best_nme_on_disk(workdir):
  """The NME stored in best/'s checkpoint (inf without one): the value a
  resumed run must beat, whatever the latest checkpoint recorded."""
  path = tf.train.latest_checkpoint(os.path.join(workdir, BEST))
  if path is None:
    return float('inf')
  return float(tf.train.load_variable(path, BEST_NME_KEY))


def restore_model(workdir, which='best'):
  """The Keras model of a workdir from its best (or latest) checkpoint."""
  cfg = read_config(workdir)
  model = build_model(cfg, initialize=False)
  path = checkpoint_path(workdir, which)
  tf.train.Checkpoint(model=model).restore(path).expect_partial()
  return model, cfg, path
