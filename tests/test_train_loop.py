"""The training loop: schedule, learning, resume, interruption, NaN guard,
multi-worker."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import faces
import train_loop
from pipeline import records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_AUGMENTATION = dict(max_rotation=0.0, min_scale=1.0, max_scale=1.0,
                       max_shift=0.0, flip=False, brightness=0.0, contrast=0.0,
                       saturation=0.0)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """Prepared shards of generated faces (small crops, a few hundred faces)."""
  _, shards = faces.make_faces(str(tmp_path_factory.mktemp('faces')),
                               num_images=240, num_shards=4,
                               val_fraction=0.15, num_workers=2)
  return shards


def small_config(data_dir, workdir, **overrides):
  values = dict(data_dir=data_dir, workdir=str(workdir), batch_size=16,
                train_steps=20, lr_boundaries=(10, 15),
                lr_values=(2e-3, 1e-3, 5e-4), input_size=64, alpha=0.35,
                head_width=64, bn_momentum=0.9, eval_every=10_000,
                checkpoint_every=10, log_every=5, eval_batch_size=32,
                num_summary_images=2, seed=3)
  values.update(overrides)
  return train_loop.TrainConfig(**values)


def _run_script(*args, env=None):
  return subprocess.Popen(
      [sys.executable, os.path.join(REPO, 'train_loop.py'), *args],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)


def _flags(cfg):
  names = ('data_dir', 'workdir', 'batch_size', 'train_steps', 'input_size',
           'alpha', 'head_width', 'bn_momentum', 'eval_every',
           'checkpoint_every', 'log_every', 'eval_batch_size', 'seed')
  args = [f'--{n}={getattr(cfg, n)}' for n in names]
  args += [f'--lr_boundaries={",".join(map(str, cfg.lr_boundaries))}',
           f'--lr_values={",".join(map(str, cfg.lr_values))}']
  return args


def test_schedule_rate_at_each_boundary():
  schedule = train_loop.learning_rate_schedule((50_000, 90_000),
                                               (1e-3, 2e-4, 1e-4))
  rates = {s: float(schedule(s)) for s in (0, 49_999, 50_000, 89_999, 90_000,
                                           119_999)}
  assert rates == pytest.approx({0: 1e-3, 49_999: 1e-3, 50_000: 2e-4,
                                 89_999: 2e-4, 90_000: 1e-4, 119_999: 1e-4})


def test_default_flags_are_the_prototype_schedule():
  cfg = train_loop.TrainConfig(data_dir='d', workdir='w')
  assert (cfg.batch_size, cfg.train_steps, cfg.lr_boundaries, cfg.lr_values,
          cfg.amsgrad, cfg.loss) == (16, 120_000, (50_000, 90_000),
                                     (1e-3, 2e-4, 1e-4), True, 'mse')


@pytest.mark.parametrize('override,flag', [
    (dict(lr_values=(1e-3, 1e-4)), '--lr_values'),
    (dict(lr_boundaries=(90, 50)), '--lr_boundaries'),
    (dict(bn_momentum=1.0), '--bn_momentum'),
    (dict(loss='hinge'), '--loss'),
])
def test_bad_flags_are_named(override, flag, tmp_path):
  cfg = small_config('unused', tmp_path, **override)
  with pytest.raises(ValueError, match=flag):
    train_loop.validate_config(cfg)


def test_one_step_lowers_the_loss_on_a_fixed_batch(data_dir, tmp_path):
  trainer = train_loop.Trainer(small_config(
      data_dir, tmp_path, lr_values=(1e-3, 1e-3, 1e-3), **NO_AUGMENTATION))
  batch = next(iter(trainer._train_dataset()))
  fixed = iter(tf.data.Dataset.from_tensors(batch).repeat())
  before, _ = trainer._train_step(fixed)  # loss before this step's update
  after, _ = trainer._train_step(fixed)
  assert float(after) < float(before)


def test_short_run_really_learns(data_dir, tmp_path):
  cfg = small_config(data_dir, tmp_path, train_steps=300,
                     lr_boundaries=(200, 260), lr_values=(2e-3, 5e-4, 2e-4),
                     eval_every=300, checkpoint_every=300, max_rotation=15.0)
  trainer = train_loop.Trainer(cfg)
  untrained = float(np.mean(trainer.evaluate()[0]))
  summary = trainer.train()
  trained = summary['val_nme']
  assert summary['step'] == 300
  assert trained < 0.5 * untrained, (untrained, trained)
  best = json.load(open(tmp_path / 'best' / 'best.json'))
  assert best['step'] == 300 and best['nme'] == pytest.approx(trained)
  # TensorBoard got the scalars and the drawn validation faces.
  tags = set()
  for sub in ('train', 'val'):
    for name in os.listdir(tmp_path / sub):
      for event in tf.compat.v1.train.summary_iterator(
          str(tmp_path / sub / name)):
        tags.update(v.tag for v in event.summary.value)
  assert {'loss', 'learning_rate', 'gradient_norm', 'steps_per_second', 'nme',
          'faces'} <= tags


def test_restored_model_predicts_like_the_trained_one(data_dir, tmp_path):
  cfg = small_config(data_dir, tmp_path, train_steps=10, eval_every=10)
  trainer = train_loop.Trainer(cfg)
  trainer.train()
  model, restored_cfg, path = train_loop.restore_model(str(tmp_path))
  assert restored_cfg.input_size == 64 and path.endswith('ckpt-10')
  x = np.random.default_rng(0).random([2, 64, 64, 3], np.float32)
  np.testing.assert_allclose(model(x, training=False),
                             trainer.model(x, training=False), atol=1e-6)


def test_resume_continues_with_same_step_weights_and_rate(data_dir, tmp_path):
  first = train_loop.Trainer(small_config(data_dir, tmp_path, train_steps=12,
                                          checkpoint_every=6))
  first.train()
  saved = [w.numpy() for w in first.model.weights]
  second = train_loop.Trainer(small_config(data_dir, tmp_path, train_steps=16,
                                           checkpoint_every=6))
  assert second.step == 12
  for a, b in zip(saved, second.model.weights):
    np.testing.assert_array_equal(a, b.numpy())
  assert second.learning_rate(second.step) == pytest.approx(1e-3)
  assert float(second.optimizer.learning_rate) == pytest.approx(1e-3)
  assert second.train()['step'] == 16


def test_changing_the_network_of_a_workdir_is_refused(data_dir, tmp_path):
  train_loop.Trainer(small_config(data_dir, tmp_path, train_steps=1)).train()
  with pytest.raises(ValueError, match='--input_size'):
    train_loop.Trainer(small_config(data_dir, tmp_path, input_size=96))


def test_seed_makes_a_run_repeatable(data_dir, tmp_path):
  weights = []
  for name in ('a', 'b'):
    keras.utils.set_random_seed(7)
    trainer = train_loop.Trainer(small_config(
        data_dir, tmp_path / name, train_steps=3, deterministic=True))
    trainer.train()
    weights.append(trainer.model.get_layer('head3_conv').kernel.numpy())
  np.testing.assert_array_equal(*weights)


def _write_nan_shards(source_dir, target_dir):
  """A copy of the shards whose landmarks are NaN: every loss is NaN."""
  os.makedirs(target_dir)
  manifest = json.load(open(os.path.join(source_dir, 'manifest.json')))
  for split in ('train', 'val'):
    for path in tf.io.gfile.glob(records.shard_pattern(source_dir, split)):
      with tf.io.TFRecordWriter(os.path.join(target_dir,
                                             os.path.basename(path))) as out:
        for raw in tf.data.TFRecordDataset(path):
          example = tf.train.Example.FromString(raw.numpy())
          values = example.features.feature['landmarks'].float_list.value
          values[:] = [float('nan')] * len(values)
          out.write(example.SerializeToString())
  json.dump(manifest, open(os.path.join(target_dir, 'manifest.json'), 'w'))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
  workdir = tmp_path / 'run'
  train_loop.Trainer(small_config(data_dir, workdir, train_steps=10)).train()
  good = tf.train.latest_checkpoint(str(workdir / 'checkpoints'))
  nan_dir = str(tmp_path / 'nan')
  _write_nan_shards(data_dir, nan_dir)
  trainer = train_loop.Trainer(small_config(nan_dir, workdir, train_steps=30))
  with pytest.raises(FloatingPointError, match='last good checkpoint'):
    trainer.train()
  assert tf.train.latest_checkpoint(str(workdir / 'checkpoints')) == good
  model, _, _ = train_loop.restore_model(str(workdir), which='checkpoints')
  assert all(np.isfinite(w.numpy()).all() for w in model.weights)


@pytest.mark.slow
def test_sigterm_saves_and_a_rerun_resumes(data_dir, tmp_path):
  cfg = small_config(data_dir, tmp_path, train_steps=100_000,
                     checkpoint_every=100_000)
  proc = _run_script(*_flags(cfg))
  try:
    # Wait until training is under way (the first summaries are written).
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / 'train').exists():
      time.sleep(0.5)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == 0, output
  stopped_at = int(tf.train.latest_checkpoint(
      str(tmp_path / 'checkpoints')).rsplit('-', 1)[1])
  assert stopped_at > 0
  resumed = train_loop.Trainer(small_config(data_dir, tmp_path,
                                            train_steps=stopped_at + 2))
  assert resumed.step == stopped_at
  assert resumed.train()['step'] == stopped_at + 2


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_worker_multi_worker_mirrored_run(data_dir, tmp_path):
  cfg = small_config(data_dir, tmp_path, train_steps=4, checkpoint_every=2,
                     eval_every=4, strategy='multi_worker')
  workers = [f'localhost:{_free_port()}' for _ in range(2)]
  procs = []
  for index in range(2):
    env = dict(os.environ, TF_CONFIG=json.dumps({
        'cluster': {'worker': workers},
        'task': {'type': 'worker', 'index': index}}))
    procs.append(_run_script(*_flags(cfg), '--strategy=multi_worker', env=env))
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  for p, output in zip(procs, outputs):
    assert p.returncode == 0, output
  assert tf.train.latest_checkpoint(
      str(tmp_path / 'checkpoints')).endswith('ckpt-4')
  # Only the chief keeps checkpoints; the other worker's scratch copy is gone.
  assert not [n for n in os.listdir(tmp_path / 'checkpoints')
              if n.startswith('.worker')]
  assert json.load(open(tmp_path / 'best' / 'best.json'))['step'] == 4
