"""Trains the landmark network on prepared shards, resumably, in one process.

  python train_loop.py --data_dir=DATA --workdir=RUN

The whole piecewise-constant schedule (by default the prototype's 1e-3 for 50k
steps, 2e-4 for 40k, 1e-4 for 30k) runs in this one process. `--workdir` holds
config.json, checkpoints/ (the latest few), best/ (the best validation NME) and
TensorBoard logs (train/, val/); running the same command again continues where
the last run stopped.
"""

import dataclasses
import json
import os
import signal
import time

from absl import app
from absl import flags
from absl import logging
import cv2
import keras
import numpy as np
import tensorflow as tf
import tqdm

from model import losses
from model import metrics
from model import network
from pipeline import augment
from pipeline import reader

# Fields that fix the network and its input view: a workdir cannot change them.
ARCHITECTURE_FIELDS = ('input_size', 'alpha', 'head', 'head_width', 'view_scale',
                       'box')
STRATEGIES = ('default', 'mirrored', 'multi_worker')
BOXES = ('landmarks', 'annotation')
PRECISIONS = ('float32', 'mixed_float16', 'mixed_bfloat16')


@dataclasses.dataclass
class TrainConfig:
  """Everything a run depends on; saved as workdir/config.json."""
  data_dir: str
  workdir: str
  batch_size: int = 16
  train_steps: int = 120_000
  lr_boundaries: tuple = (50_000, 90_000)
  lr_values: tuple = (1e-3, 2e-4, 1e-4)
  amsgrad: bool = True
  loss: str = 'mse'
  input_size: int = 224
  alpha: float = 1.0
  head: str = 'conv'
  head_width: int = 128
  bn_momentum: float = 0.99
  init_weights: str = ''
  view_scale: float = 1.25
  box: str = 'landmarks'
  max_rotation: float = 45.0
  min_scale: float = 0.7
  max_scale: float = 1.0
  max_shift: float = 0.05
  flip: bool = True
  brightness: float = 0.2
  contrast: float = 0.3
  saturation: float = 0.3
  occlusion: float = 0.0
  eval_every: int = 2000
  checkpoint_every: int = 1000
  log_every: int = 100
  keep_checkpoints: int = 3
  eval_batch_size: int = 64
  num_summary_images: int = 8
  strategy: str = 'default'
  precision: str = 'float32'
  jit_compile: bool = False
  seed: int = 0
  deterministic: bool = False

  def augment_config(self):
    return augment.AugmentConfig(
        max_rotation=self.max_rotation, min_scale=self.min_scale,
        max_scale=self.max_scale, max_shift=self.max_shift, flip=self.flip,
        brightness=self.brightness, contrast=self.contrast,
        saturation=self.saturation, occlusion=self.occlusion)


def validate_config(cfg):
  """Rejects flag values that would fail later, naming the flag."""
  def need(ok, message):
    if not ok:
      raise ValueError(message)
  need(len(cfg.lr_values) == len(cfg.lr_boundaries) + 1,
       f'--lr_values needs one more value than --lr_boundaries: got '
       f'{len(cfg.lr_values)} values for {len(cfg.lr_boundaries)} boundaries')
  need(list(cfg.lr_boundaries) == sorted(set(cfg.lr_boundaries)) and
       all(b > 0 for b in cfg.lr_boundaries),
       f'--lr_boundaries must be positive and increasing, got '
       f'{list(cfg.lr_boundaries)}')
  need(all(v > 0 for v in cfg.lr_values),
       f'--lr_values must be positive, got {list(cfg.lr_values)}')
  need(cfg.train_steps > 0, f'--train_steps must be positive, got '
       f'{cfg.train_steps}')
  need(cfg.batch_size > 0, f'--batch_size must be positive, got '
       f'{cfg.batch_size}')
  need(0.0 < cfg.bn_momentum < 1.0, f'--bn_momentum must be in (0, 1), got '
       f'{cfg.bn_momentum}')
  need(cfg.loss in losses.LOSSES, f'--loss must be one of {losses.LOSSES}, '
       f'got {cfg.loss!r}')
  need(cfg.strategy in STRATEGIES, f'--strategy must be one of {STRATEGIES}, '
       f'got {cfg.strategy!r}')
  need(cfg.box in BOXES, f'--box must be one of {BOXES}, got {cfg.box!r}')
  need(cfg.precision in PRECISIONS, f'--precision must be one of '
       f'{PRECISIONS}, got {cfg.precision!r}')
  need(0.0 < cfg.min_scale <= cfg.max_scale, f'--min_scale/--max_scale: need '
       f'0 < min <= max, got {cfg.min_scale}, {cfg.max_scale}')
  for name in ('eval_every', 'checkpoint_every', 'log_every'):
    need(getattr(cfg, name) > 0, f'--{name} must be positive')


def learning_rate_schedule(boundaries, values):
  """Rate as a function of the number of updates already done.

  `boundaries` count updates: (50000, 90000) gives exactly 50,000 updates at
  the first rate. Keras switches only after step > boundary, hence the -1.
  """
  return keras.optimizers.schedules.PiecewiseConstantDecay(
      [int(b) - 1 for b in boundaries], [float(v) for v in values])


def make_strategy(name):
  if name == 'mirrored':
    return tf.distribute.MirroredStrategy()
  if name == 'multi_worker':
    # Cluster from TF_CONFIG, as TensorFlow documents.
    return tf.distribute.MultiWorkerMirroredStrategy()
  return tf.distribute.get_strategy()


def _task(strategy):
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not resolver.task_type:
    return None, 0
  return resolver.task_type, resolver.task_id


def is_chief(strategy):
  task_type, task_id = _task(strategy)
  return task_type in (None, 'chief') or (
      task_type == 'worker' and task_id == 0 and
      'chief' not in strategy.cluster_resolver.cluster_spec().as_dict())


def write_dir(path, strategy):
  """Workers other than the chief save into a scratch copy, as TF requires
  every worker to take part in a save."""
  if is_chief(strategy):
    return path
  _, task_id = _task(strategy)
  return os.path.join(path, f'.worker_{task_id}_tmp')


def load_or_write_config(cfg):
  """Writes config.json on a new workdir; on resume, checks the architecture."""
  path = os.path.join(cfg.workdir, 'config.json')
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      saved = json.load(f)
    for field in ARCHITECTURE_FIELDS:
      if saved.get(field) != getattr(cfg, field):
        raise ValueError(
            f'--{field}={getattr(cfg, field)} differs from {saved.get(field)} '
            f'in {path}: a workdir cannot change its network; use a new '
            '--workdir')
  tf.io.gfile.makedirs(cfg.workdir)
  tmp = path + '.tmp'
  with tf.io.gfile.GFile(tmp, 'w') as f:
    json.dump(dataclasses.asdict(cfg), f, indent=2)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def read_config(workdir):
  """The TrainConfig a workdir was trained with."""
  path = os.path.join(workdir, 'config.json')
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f'{path} not found: --workdir is not a training '
                            'workdir')
  with tf.io.gfile.GFile(path) as f:
    saved = json.load(f)
  known = {f.name for f in dataclasses.fields(TrainConfig)}
  return TrainConfig(**{k: v for k, v in saved.items() if k in known})


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


def restore_model(workdir, which='best'):
  """The Keras model of a workdir from its best (or latest) checkpoint."""
  cfg = read_config(workdir)
  model = build_model(cfg, initialize=False)
  directory = os.path.join(workdir, which)
  path = tf.train.latest_checkpoint(directory)
  if path is None and which == 'best':
    directory = os.path.join(workdir, 'checkpoints')
    path = tf.train.latest_checkpoint(directory)
  if path is None:
    raise FileNotFoundError(f'no checkpoint in {directory}')
  tf.train.Checkpoint(model=model).restore(path).expect_partial()
  return model, cfg, path


def draw_landmarks(image, true, predicted):
  """uint8 view with true (green) and predicted (red) points, for TensorBoard."""
  canvas = np.ascontiguousarray(image)
  size = canvas.shape[0]
  radius = max(1, size // 112)
  for points, colour in ((true, (0, 255, 0)), (predicted, (255, 0, 0))):
    for x, y in np.asarray(points) * size:
      cv2.circle(canvas, (int(round(x - 0.5)), int(round(y - 0.5))), radius,
                 colour, -1, lineType=cv2.LINE_AA)
  return canvas


class Trainer:
  """Owns the model, optimizer, checkpoints and summaries of one workdir."""

  def __init__(self, cfg):
    validate_config(cfg)
    self.cfg = cfg
    keras.mixed_precision.set_global_policy(cfg.precision)
    self.strategy = make_strategy(cfg.strategy)
    self.chief = is_chief(self.strategy)
    self.manifest = reader.read_manifest(cfg.data_dir)
    if self.chief:
      load_or_write_config(cfg)
    with self.strategy.scope():
      self.model = build_model(cfg)
      optimizer = keras.optimizers.Adam(
          learning_rate_schedule(cfg.lr_boundaries, cfg.lr_values),
          amsgrad=cfg.amsgrad)
      if cfg.precision == 'mixed_float16':
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
      self.optimizer = optimizer
      self.optimizer.build(self.model.trainable_variables)
    self.loss_fn = losses.get_loss(cfg.loss, cfg.input_size)
    self.best_nme = tf.Variable(np.inf, dtype=tf.float64, trainable=False)
    checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                     best_nme=self.best_nme)
    self.latest = tf.train.CheckpointManager(
        checkpoint, write_dir(os.path.join(cfg.workdir, 'checkpoints'),
                              self.strategy),
        max_to_keep=cfg.keep_checkpoints, step_counter=self.optimizer.iterations)
    self.best = tf.train.CheckpointManager(
        checkpoint, write_dir(os.path.join(cfg.workdir, 'best'), self.strategy),
        max_to_keep=1, step_counter=self.optimizer.iterations)
    self.restored_from = self.latest.restore_or_initialize()
    if self.chief:
      self.train_writer = tf.summary.create_file_writer(
          os.path.join(cfg.workdir, 'train'))
      self.val_writer = tf.summary.create_file_writer(
          os.path.join(cfg.workdir, 'val'))
    else:
      self.train_writer = self.val_writer = tf.summary.create_noop_writer()
    self._train_step = self._make_train_step()
    self._predict = tf.function(self._predict_views)

  @property
  def step(self):
    return int(self.optimizer.iterations.numpy())

  def learning_rate(self, step):
    return float(learning_rate_schedule(self.cfg.lr_boundaries,
                                        self.cfg.lr_values)(step))

  def _train_dataset(self):
    cfg = self.cfg

    def dataset_fn(input_context):
      return reader.make_dataset(
          cfg.data_dir, 'train', cfg.batch_size, training=True,
          seed=cfg.seed + self.step, deterministic=cfg.deterministic,
          input_context=input_context)

    return self.strategy.distribute_datasets_from_function(dataset_fn)

  def _make_train_step(self):
    cfg, model, optimizer = self.cfg, self.model, self.optimizer
    aug = cfg.augment_config()
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    @tf.function(jit_compile=cfg.jit_compile)
    def gradients(images, targets):
      with tf.GradientTape() as tape:
        predicted = model(images, training=True)
        loss = tf.nn.compute_average_loss(
            self.loss_fn(targets, predicted), global_batch_size=cfg.batch_size)
        objective = optimizer.scale_loss(loss) if scaled else loss
      grads = tape.gradient(objective, model.trainable_variables)
      return loss, grads

    def replica_step(batch):
      replica = tf.distribute.get_replica_context().replica_id_in_sync_group
      # A stateless seed per (run, step, replica): a resumed run repeats the
      # augmentation exactly, and replicas do not repeat each other's.
      seed = tf.stack([tf.cast(cfg.seed * 1000 + replica, tf.int64),
                       tf.cast(optimizer.iterations, tf.int64)])
      images, targets = augment.augment(
          batch['image'], batch['landmarks'], self._boxes(batch), seed,
          cfg.input_size, cfg.view_scale, aug)
      loss, grads = gradients(images, targets)
      optimizer.apply_gradients(zip(grads, model.trainable_variables))
      norm = tf.linalg.global_norm(grads)
      if scaled:
        norm /= tf.cast(optimizer.dynamic_scale, norm.dtype)
      return loss, norm

    @tf.function
    def train_step(iterator):
      loss, norm = self.strategy.run(replica_step, args=(next(iterator),))
      return (self.strategy.reduce('SUM', loss, axis=None),
              self.strategy.reduce('MEAN', norm, axis=None))

    return train_step

  def _boxes(self, batch):
    """The face boxes views are built on: the tight landmark box (300-W's
    evaluation convention, and what the landmarker's refine pass gives), or
    the annotation's own box (e.g. dlib's detector boxes)."""
    if self.cfg.box == 'annotation':
      return batch['box']
    landmarks = batch['landmarks']
    return tf.concat([tf.reduce_min(landmarks, axis=1),
                      tf.reduce_max(landmarks, axis=1)], axis=-1)

  def _predict_views(self, images, landmarks, boxes):
    views, targets = augment.center_view(images, landmarks, boxes,
                                         self.cfg.input_size,
                                         self.cfg.view_scale)
    return views, targets, self.model(views, training=False)

  def evaluate(self):
    """Per-face NME on the validation split, and a few drawn faces."""
    cfg = self.cfg
    dataset = reader.make_dataset(cfg.data_dir, 'val', cfg.eval_batch_size,
                                  training=False)
    errors, drawn = [], []
    for batch in dataset:
      views, targets, predicted = self._predict(batch['image'],
                                                batch['landmarks'],
                                                self._boxes(batch))
      errors.append(metrics.nme(predicted, targets).numpy())
      for view, true, pred in zip(views.numpy(), targets.numpy(),
                                  predicted.numpy()):
        if len(drawn) < cfg.num_summary_images:
          drawn.append(draw_landmarks(
              (np.clip(view, 0, 1) * 255).astype(np.uint8), true, pred))
    return np.concatenate(errors) if errors else np.zeros([0]), drawn

  def _validate(self, step):
    errors, drawn = self.evaluate()
    nme = float(np.mean(errors))
    with self.val_writer.as_default(step=step):
      tf.summary.scalar('nme', nme)
      tf.summary.scalar('failure_rate_0.08', metrics.failure_rate(errors, 0.08))
      if drawn:
        tf.summary.image('faces', np.stack(drawn).astype(np.float32) / 255.0,
                         max_outputs=len(drawn))
    if nme < float(self.best_nme.numpy()):
      self.best_nme.assign(nme)
      self.best.save(checkpoint_number=step)
      if self.chief:
        with tf.io.gfile.GFile(os.path.join(self.cfg.workdir, 'best',
                                            'best.json'), 'w') as f:
          json.dump({'step': step, 'nme': nme, 'faces': int(errors.size)}, f)
    return nme

  def _check_finite(self, step, loss, norm):
    """Stops before a non-finite model can reach a checkpoint."""
    loss, norm = float(loss), float(norm)
    if not (np.isfinite(loss) and np.isfinite(norm)):
      raise FloatingPointError(
          f'step {step}: loss {loss}, gradient norm {norm}; stopping. The last '
          f'good checkpoint is kept: {self.latest.latest_checkpoint} (None: '
          'none was saved yet). Check the data or lower --lr_values.')
    return loss, norm

  def _save(self, step):
    self.latest.save(checkpoint_number=step)
    if not self.chief:
      tf.io.gfile.rmtree(self.latest.directory)

  def train(self, on_step=None):
    """Runs to cfg.train_steps; returns a summary dict of how it ended.

    `on_step(step)`, if given, is called after every step (benchmarks use it
    to sample memory at the schedule's boundaries).
    """
    cfg = self.cfg
    start = self.step
    if self.restored_from:
      logging.info('Resumed from %s at step %d (learning rate %g).',
                   self.restored_from, start, self.learning_rate(start))
    stop = {'signal': None}
    previous = {}

    def request_stop(signum, _):
      stop['signal'] = signal.Signals(signum).name

    for sig in (signal.SIGINT, signal.SIGTERM):
      previous[sig] = signal.signal(sig, request_stop)
    summary = {'start_step': start, 'stopped': 'finished', 'val_nme': None}
    try:
      iterator = iter(self._train_dataset())
      bar = tqdm.tqdm(total=cfg.train_steps, initial=start, unit='step',
                      disable=not self.chief, dynamic_ncols=True)
      tick, tick_step = time.time(), start
      step = start
      loss = norm = 0.0
      while step < cfg.train_steps:
        if stop['signal']:
          self._check_finite(step, loss, norm)
          self._save(step)
          summary['stopped'] = stop['signal']
          logging.info('%s: saved step %d in %s and stopped.', stop['signal'],
                       step, self.latest.directory)
          break
        loss, norm = self._train_step(iterator)
        step += 1
        bar.update(1)
        if on_step:
          on_step(step)
        logged = step % cfg.log_every == 0
        saving = step % cfg.checkpoint_every == 0 or step == cfg.train_steps
        validating = step % cfg.eval_every == 0 or step == cfg.train_steps
        if not (logged or saving or validating):
          continue
        loss, norm = self._check_finite(step, loss, norm)
        lr = self.learning_rate(step - 1)
        if logged:
          now = time.time()
          with self.train_writer.as_default(step=step):
            tf.summary.scalar('loss', loss)
            tf.summary.scalar('learning_rate', lr)
            tf.summary.scalar('gradient_norm', norm)
            tf.summary.scalar('steps_per_second',
                              (step - tick_step) / max(now - tick, 1e-9))
          tick, tick_step = now, step
          bar.set_postfix(loss=f'{loss:.4g}', lr=f'{lr:.1e}')
        if saving:
          self._save(step)
        if validating:
          summary['val_nme'] = self._validate(step)
          bar.write(f'step {step}: validation NME {summary["val_nme"]:.4f} '
                    f'(best {float(self.best_nme.numpy()):.4f})')
      bar.close()
    finally:
      for sig, handler in previous.items():
        signal.signal(sig, handler)
      self.train_writer.flush()
      self.val_writer.flush()
    summary.update(step=self.step, best_nme=float(self.best_nme.numpy()))
    return summary


def train(cfg):
  return Trainer(cfg).train()


FLAGS = flags.FLAGS


def define_flags():
  defaults = TrainConfig(data_dir='', workdir='')
  flags.DEFINE_string('data_dir', None, 'Folder of shards made by '
                      '`python -m pipeline.prepare`.')
  flags.DEFINE_string('workdir', None, 'Run folder: config, checkpoints, '
                      'TensorBoard logs. Running again resumes.')
  help_text = {
      'batch_size': 'Global batch size (split over replicas).',
      'train_steps': 'Total optimizer steps.',
      'lr_boundaries': 'Steps where the learning rate changes.',
      'lr_values': 'Learning rates: one more than boundaries.',
      'amsgrad': 'Adam with the AMSGrad variant (the prototype).',
      'loss': f'One of {losses.LOSSES}.',
      'input_size': 'Network input side in pixels (multiple of 16).',
      'alpha': 'MobileNetV2 width multiplier.',
      'head': f'Regression head, one of {network.HEADS}.',
      'head_width': 'Channels of the head layers.',
      'bn_momentum': 'BatchNorm moving-average momentum (Keras builds '
                     'MobileNetV2 with 0.999, too slow for short runs).',
      'init_weights': 'Backbone weights file (.h5). Default: the Keras cache '
                      'if it has the ImageNet file, else random.',
      'view_scale': 'Network view side / face-box side.',
      'box': f'Face box the view is built on, one of {BOXES}: the tight '
             'landmark box (300-W convention) or the annotation box.',
      'max_rotation': 'Augmentation: rotation range, degrees either way.',
      'min_scale': 'Augmentation: smallest face scale in the view.',
      'max_scale': 'Augmentation: largest face scale in the view.',
      'max_shift': 'Augmentation: shift range, fraction of the view.',
      'flip': 'Augmentation: random horizontal flip (with point mirroring).',
      'brightness': 'Augmentation: brightness jitter.',
      'contrast': 'Augmentation: contrast jitter.',
      'saturation': 'Augmentation: saturation jitter.',
      'occlusion': 'Augmentation: probability of a random occluding box.',
      'eval_every': 'Validate every this many steps.',
      'checkpoint_every': 'Save a checkpoint every this many steps.',
      'log_every': 'Write training summaries every this many steps.',
      'keep_checkpoints': 'How many latest checkpoints to keep.',
      'eval_batch_size': 'Batch size for validation.',
      'num_summary_images': 'Validation faces drawn into TensorBoard.',
      'strategy': f'tf.distribute strategy, one of {STRATEGIES}.',
      'precision': f'One of {PRECISIONS}.',
      'jit_compile': 'XLA-compile the step (measure first: slower on CPU).',
      'seed': 'Seed for initialisation, shuffling and augmentation.',
      'deterministic': 'Deterministic input order and ops (repeatable runs).',
  }
  for field in dataclasses.fields(TrainConfig):
    name, default = field.name, getattr(defaults, field.name)
    if name in ('data_dir', 'workdir'):
      continue
    if isinstance(default, bool):
      flags.DEFINE_boolean(name, default, help_text[name])
    elif isinstance(default, int):
      flags.DEFINE_integer(name, default, help_text[name])
    elif isinstance(default, float):
      flags.DEFINE_float(name, default, help_text[name])
    elif isinstance(default, tuple):
      flags.DEFINE_list(name, [str(v) for v in default], help_text[name])
    else:
      flags.DEFINE_string(name, default, help_text[name])
  flags.mark_flags_as_required(['data_dir', 'workdir'])


def config_from_flags():
  values = {f.name: FLAGS[f.name].value for f in dataclasses.fields(TrainConfig)}
  values['lr_boundaries'] = tuple(int(float(v)) for v in values['lr_boundaries'])
  values['lr_values'] = tuple(float(v) for v in values['lr_values'])
  return TrainConfig(**values)


def main(argv):
  del argv
  cfg = config_from_flags()
  keras.utils.set_random_seed(cfg.seed)
  if cfg.deterministic:
    tf.config.experimental.enable_op_determinism()
  summary = train(cfg)
  logging.info('Training ended: %s', summary)


if __name__ == '__main__':
  define_flags()
  app.run(main)
