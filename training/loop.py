"""The training loop: one workdir, the whole schedule, resumable.

Trainer owns the model, optimizer, checkpoints and summaries of a workdir
(training/workdir.py); `train(cfg)` runs it to cfg.train_steps. At a step that
both validates and saves, validation comes first, so every checkpoint records
the best NME that best/ holds. Each compiled call runs up to
cfg.steps_per_loop steps, never past a step that logs, validates or saves.
"""

import contextlib
import os
import signal
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf
import tqdm

from model import losses
from model import metrics
from pipeline import augment
from facelandmark import drawing
from pipeline import reader
from pipeline import views
from training import config as config_lib
from training import distribute
from training import step as step_lib
from training import workdir as workdir_lib


# Steps timed after the first call (which traces and compiles) before the
# run says how long it will take.
ETA_STEPS = 10


class Trainer:
  """Owns the model, optimizer, checkpoints and summaries of one workdir."""

  def __init__(self, cfg, log=logging.info):
    config_lib.validate_config(cfg)
    self.cfg = cfg
    self.log = log
    manifests = reader.read_manifests(cfg.data_dir, 'train',
                                      cfg.training_mix())
    reader.check_cache(manifests, 'train', cfg.cache)
    self.validates = reader.split_size(manifests[0], 'val') > 0
    workdir_lib.check_config(cfg)
    keras.mixed_precision.set_global_policy(cfg.precision)
    self.strategy = distribute.make_strategy(cfg.strategy)
    self.chief = distribute.is_chief(self.strategy)
    with self.strategy.scope():
      self.model = workdir_lib.build_model(cfg, log=log)
      self.optimizer = step_lib.make_optimizer(cfg)
      self.optimizer.build(self.model.trainable_variables)
    self.loss_fn = losses.get_loss(cfg.loss, cfg.input_size)
    self.best_nme = tf.Variable(np.inf, dtype=tf.float64, trainable=False)
    checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                     best_nme=self.best_nme)
    self.latest, self.best = (
        tf.train.CheckpointManager(
            checkpoint, distribute.write_dir(
                os.path.join(cfg.workdir, folder), self.strategy),
            max_to_keep=keep, step_counter=self.optimizer.iterations)
        for folder, keep in ((workdir_lib.CHECKPOINTS, cfg.keep_checkpoints),
                             (workdir_lib.BEST, 1)))
    # Every worker restores the chief's checkpoint: the others' scratch
    # copies are deleted after each save.
    self.restored_from = tf.train.latest_checkpoint(
        os.path.join(cfg.workdir, workdir_lib.CHECKPOINTS))
    if self.restored_from:
      checkpoint.restore(self.restored_from)
    # best/ may be newer than the latest checkpoint (a kill between the two).
    self.best_nme.assign(min(float(self.best_nme.numpy()),
                             workdir_lib.best_nme_on_disk(cfg.workdir)))
    if self.chief:
      workdir_lib.write_config(cfg)  # Only once everything above was valid.
      self.train_writer, self.val_writer = (
          tf.summary.create_file_writer(os.path.join(cfg.workdir, name))
          for name in (workdir_lib.TRAIN_LOGS, workdir_lib.VAL_LOGS))
    else:
      self.train_writer = self.val_writer = tf.summary.create_noop_writer()
    self._train_step = step_lib.make_train_step(
        cfg, self.model, self.optimizer, self.loss_fn, self.strategy)
    self._predict = tf.function(self._predict_views)

  @property
  def step(self):
    return int(self.optimizer.iterations.numpy())

  def learning_rate(self, step):
    return float(step_lib.learning_rate_schedule(self.cfg.lr_boundaries,
                                                 self.cfg.lr_values)(step))

  def _train_dataset(self):
    cfg = self.cfg

    def dataset_fn(input_context):
      return reader.make_dataset(
          cfg.data_dir, 'train', cfg.batch_size, training=True,
          seed=cfg.seed + self.step, deterministic=cfg.deterministic,
          input_context=input_context, cache=cfg.cache,
          mix=cfg.training_mix(), log=self.log)

    return self.strategy.distribute_datasets_from_function(dataset_fn)

  def _predict_views(self, images, landmarks, boxes):
    views_, targets = augment.center_view(images, landmarks, boxes,
                                          self.cfg.input_size,
                                          self.cfg.view_scale)
    return views_, targets, self.model(views_, training=False)

  def evaluate(self):
    """Per-face NME on the validation split, and a few drawn faces."""
    cfg = self.cfg
    dataset = reader.make_dataset(cfg.data_dir, 'val', cfg.eval_batch_size,
                                  training=False)
    errors, drawn = [], []
    with reader.naming_corrupt_shards(cfg.data_dir, 'val'):
      for batch in dataset:
        boxes = views.face_boxes(batch['landmarks'], batch['box'], cfg.box)
        views_, targets, predicted = self._predict(batch['image'],
                                                   batch['landmarks'], boxes)
        errors.append(metrics.nme(predicted, targets).numpy())
        for view, true, pred in zip(views_.numpy(), targets.numpy(),
                                    predicted.numpy()):
          if len(drawn) < cfg.num_summary_images:
            drawn.append(drawing.draw_landmarks(
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
      distribute.save(self.best, self.strategy, step)
      if self.chief:
        workdir_lib.write_json(
            os.path.join(self.cfg.workdir, workdir_lib.BEST,
                         workdir_lib.BEST_JSON),
            {'step': step, 'nme': nme, 'faces': int(errors.size)})
    return nme

  def _check_finite(self, step, loss):
    """Stops before a non-finite model can reach a checkpoint. The loss, not
    the gradient: under mixed_float16 an overflowing gradient is ordinary (the
    loss scale drops and the update is skipped)."""
    loss = float(loss)
    if not np.isfinite(loss):
      raise FloatingPointError(
          f'step {step}: loss {loss}; stopping. The last good checkpoint is '
          f'kept: {self.latest.latest_checkpoint} (None: none was saved yet). '
          'Check the data or lower --lr_values.')
    return loss

  def _log(self, step, loss, norm, rate):
    lr = self.learning_rate(step - 1)
    with self.train_writer.as_default(step=step):
      tf.summary.scalar('loss', loss)
      tf.summary.scalar('learning_rate', lr)
      tf.summary.scalar('gradient_norm', float(norm))
      tf.summary.scalar('steps_per_second', rate)
    return lr

  def train(self, on_step=None):
    """Runs to cfg.train_steps; returns a summary dict of how it ended.

    `on_step(step)`, if given, is called after every call that took a step
    (every step with steps_per_loop=1; benchmarks use it to sample memory at
    the schedule's boundaries).
    """
    cfg = self.cfg
    start = step = self.step
    if self.restored_from:
      self.log(f'Resumed from {self.restored_from} at step {start} (learning '
               f'rate {self.learning_rate(start):g}).')
    if not self.validates:
      self.log(f'Training without validation: {cfg.data_dir} has no val '
               'faces, so best/ is not kept and export uses the latest '
               'checkpoint.')
    stop = {'signal': None}

    def request_stop(signum, _):
      stop['signal'] = signal.Signals(signum).name

    previous = {sig: signal.signal(sig, request_stop)
                for sig in (signal.SIGINT, signal.SIGTERM)}
    summary = {'start_step': start, 'stopped': 'finished', 'val_nme': None}
    loss = 0.0
    try:
      iterator = iter(self._train_dataset())
      bar = tqdm.tqdm(total=cfg.train_steps, initial=start, unit='step',
                      disable=not self.chief, dynamic_ncols=True)
      tick, tick_step = time.time(), start
      timed_from = None  # (time, step) after the first call; None once told
      with contextlib.ExitStack() as shards:
        shards.enter_context(
            reader.naming_corrupt_shards(cfg.data_dir, 'train', 'val'))
        for folder, _ in cfg.training_mix():
          shards.enter_context(reader.naming_corrupt_shards(folder, 'train'))
        while step < cfg.train_steps:
          if stop['signal']:
            self._check_finite(step, loss)
            distribute.save(self.latest, self.strategy, step)
            summary['stopped'] = stop['signal']
            self.log(f'{stop["signal"]}: saved step {step} in '
                     f'{self.latest.directory} and stopped.')
            break
          loss, norm = self._train_step(
              iterator, steps_in_call(cfg, step, self.validates))
          # The optimizer's count, not ours: a skipped update does not count.
          done, step = step, self.step
          if step == done:
            continue
          bar.update(step - done)
          if timed_from is None and done == start:
            timed_from = (time.time(), step)
          elif timed_from and step - timed_from[1] >= ETA_STEPS:
            per_step = (time.time() - timed_from[0]) / (step - timed_from[1])
            self.log(eta_line(per_step, cfg.train_steps - step))
            timed_from = ()
          if on_step:
            on_step(step)
          logged = step % cfg.log_every == 0
          saving = step % cfg.checkpoint_every == 0 or step == cfg.train_steps
          validating = self.validates and (step % cfg.eval_every == 0 or
                                           step == cfg.train_steps)
          if not (logged or saving or validating):
            continue
          loss = self._check_finite(step, loss)
          if logged:
            now = time.time()
            lr = self._log(step, loss, norm,
                           (step - tick_step) / max(now - tick, 1e-9))
            tick, tick_step = now, step
            bar.set_postfix(loss=f'{loss:.4g}', lr=f'{lr:.1e}')
          if validating:
            summary['val_nme'] = self._validate(step)
            bar.write(f'step {step}: validation NME '
                      f'{100 * summary["val_nme"]:.3f}% (best '
                      f'{100 * float(self.best_nme.numpy()):.3f}%)')
          if saving:
            distribute.save(self.latest, self.strategy, step)
      bar.close()
    finally:
      for sig, handler in previous.items():
        signal.signal(sig, handler)
      self.train_writer.flush()
      self.val_writer.flush()
    summary.update(step=self.step, best_nme=float(self.best_nme.numpy()))
    return summary


def eta_line(seconds_per_step, steps_left, now=None):
  """What the run says once its first steps are timed."""
  seconds = seconds_per_step * steps_left
  end = time.strftime('%a %H:%M', time.localtime((now or time.time()) +
                                                  seconds))
  hours, minutes = divmod(round(seconds / 60), 60)
  return (f'{seconds_per_step:.2f} s per step: {steps_left:,} steps to go, '
          f'about {hours} h {minutes:02d} min (ends around {end}, without '
          'validation time)')


def summary_line(summary):
  """train()'s summary in words, NME in percent as everywhere else."""
  best = summary['best_nme']
  return (f'Training ended ({summary["stopped"]}) at step {summary["step"]}, '
          f'started at {summary["start_step"]}; best validation NME: '
          f'{f"{100 * best:.3f}%" if np.isfinite(best) else "none"}.')


def steps_in_call(cfg, step, validates):
  """Steps for the next compiled call from `step`: cfg.steps_per_loop, cut
  short at the next step that logs, validates, saves or ends the run.

  validate_config makes steps_per_loop divide the periods; the cut still
  matters at the end of the run, after an update that mixed_float16 skipped,
  and on resuming from a step another steps_per_loop left.
  """
  periods = [cfg.log_every, cfg.checkpoint_every]
  if validates:
    periods.append(cfg.eval_every)
  boundary = min([cfg.train_steps] + [(step // p + 1) * p for p in periods])
  return min(cfg.steps_per_loop, boundary - step)


def train(cfg, log=logging.info):
  """Trains `cfg`'s workdir to cfg.train_steps (resuming); returns a summary."""
  keras.utils.set_random_seed(cfg.seed)
  if cfg.deterministic:
    tf.config.experimental.enable_op_determinism()
  return Trainer(cfg, log=log).train()
