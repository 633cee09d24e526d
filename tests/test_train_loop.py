"""The training loop: schedule, learning, resume, interruption, NaN guard,
multi-worker."""

import json
import os
import re
import shutil
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
from pipeline import reader
from pipeline import records
from training import config
from training import loop
from training import step as step_lib
from training import workdir as workdir_lib

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
  return config.TrainConfig(**values)


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
  schedule = step_lib.learning_rate_schedule((50_000, 90_000),
                                               (1e-3, 2e-4, 1e-4))
  rates = {s: float(schedule(s)) for s in (0, 49_999, 50_000, 89_999, 90_000,
                                           119_999)}
  assert rates == pytest.approx({0: 1e-3, 49_999: 1e-3, 50_000: 2e-4,
                                 89_999: 2e-4, 90_000: 1e-4, 119_999: 1e-4})


def test_default_flags_are_the_prototype_schedule():
  cfg = config.TrainConfig(data_dir='d', workdir='w')
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
    config.validate_config(cfg)


def test_one_step_lowers_the_loss_on_a_fixed_batch(data_dir, tmp_path):
  trainer = loop.Trainer(small_config(
      data_dir, tmp_path, lr_values=(1e-3, 1e-3, 1e-3), **NO_AUGMENTATION))
  batch = next(iter(trainer._train_dataset()))
  fixed = iter(tf.data.Dataset.from_tensors(batch).repeat())
  before, _ = trainer._train_step(fixed)  # loss before this step's update
  after, _ = trainer._train_step(fixed)
  assert float(after) < float(before)


@pytest.mark.parametrize('head', ['conv', 'heatmap', 'pip'])
def test_short_run_really_learns(data_dir, tmp_path, head):
  cfg = small_config(data_dir, tmp_path, train_steps=300, head=head,
                     loss='pip' if head == 'pip' else 'mse',
                     lr_boundaries=(200, 260), lr_values=(2e-3, 5e-4, 2e-4),
                     eval_every=300, checkpoint_every=300, max_rotation=15.0)
  trainer = loop.Trainer(cfg)
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
  trainer = loop.Trainer(cfg)
  trainer.train()
  model, restored_cfg, path = workdir_lib.restore_model(str(tmp_path))
  assert restored_cfg.input_size == 64 and path.endswith('ckpt-10')
  x = np.random.default_rng(0).random([2, 64, 64, 3], np.float32)
  np.testing.assert_allclose(model(x, training=False),
                             trainer.model(x, training=False), atol=1e-6)


def test_resume_continues_with_same_step_weights_and_rate(data_dir, tmp_path):
  first = loop.Trainer(small_config(data_dir, tmp_path, train_steps=12,
                                          checkpoint_every=6))
  first.train()
  saved = [w.numpy() for w in first.model.weights]
  second = loop.Trainer(small_config(data_dir, tmp_path, train_steps=16,
                                           checkpoint_every=6))
  assert second.step == 12
  for a, b in zip(saved, second.model.weights):
    np.testing.assert_array_equal(a, b.numpy())
  assert second.learning_rate(second.step) == pytest.approx(1e-3)
  assert float(second.optimizer.learning_rate) == pytest.approx(1e-3)
  assert second.train()['step'] == 16


def test_changing_the_network_of_a_workdir_is_refused(data_dir, tmp_path):
  loop.Trainer(small_config(data_dir, tmp_path, train_steps=1)).train()
  with pytest.raises(ValueError, match='--input_size'):
    loop.Trainer(small_config(data_dir, tmp_path, input_size=96))


def test_seed_makes_a_run_repeatable(data_dir, tmp_path):
  weights = []
  for name in ('a', 'b'):
    keras.utils.set_random_seed(7)
    trainer = loop.Trainer(small_config(
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
  loop.Trainer(small_config(data_dir, workdir, train_steps=10)).train()
  good = tf.train.latest_checkpoint(str(workdir / 'checkpoints'))
  nan_dir = str(tmp_path / 'nan')
  _write_nan_shards(data_dir, nan_dir)
  trainer = loop.Trainer(small_config(nan_dir, workdir, train_steps=30))
  with pytest.raises(FloatingPointError, match='last good checkpoint'):
    trainer.train()
  assert tf.train.latest_checkpoint(str(workdir / 'checkpoints')) == good
  model, _, _ = workdir_lib.restore_model(str(workdir), which='latest')
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
  resumed = loop.Trainer(small_config(data_dir, tmp_path,
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
  assert not [n for n in os.listdir(tmp_path / 'best')
              if n.startswith('.worker')]
  # Extended, every worker resumes from the chief's checkpoint at step 4 (a
  # worker starting from 0 would run more steps than the chief and hang or
  # diverge).
  procs = []
  for index in range(2):
    env = dict(os.environ, TF_CONFIG=json.dumps({
        'cluster': {'worker': workers},
        'task': {'type': 'worker', 'index': index}}))
    args = [a for a in _flags(cfg) if not a.startswith('--train_steps')]
    procs.append(_run_script(*args, '--train_steps=6',
                             '--strategy=multi_worker', env=env))
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  for p, output in zip(procs, outputs):
    assert p.returncode == 0, output
    assert 'at step 4' in output, output
  assert tf.train.latest_checkpoint(
      str(tmp_path / 'checkpoints')).endswith('ckpt-6')


# Defects found in review (issue 9), each with the run that showed it.


def _best_nme_in_checkpoint(workdir):
  return workdir_lib.best_nme_on_disk(str(workdir))


def test_resume_never_replaces_best_by_a_worse_model(data_dir, tmp_path):
  # Steps that both save and validate: the checkpoint must be written after
  # validation, or it records the previous best NME (inf here).
  cfg = small_config(data_dir, tmp_path, train_steps=30, eval_every=30,
                     checkpoint_every=30, lr_boundaries=(1000, 2000))
  loop.Trainer(cfg).train()
  best = workdir_lib.best_record(str(tmp_path))
  assert best['step'] == 30
  latest = tf.train.latest_checkpoint(str(tmp_path / 'checkpoints'))
  assert float(tf.train.load_variable(
      latest, workdir_lib.BEST_NME_KEY)) == pytest.approx(best['nme'])
  # Extending the finished run at a learning rate that wrecks the model: its
  # worse validation NME must not replace best/.
  worse = small_config(data_dir, tmp_path, train_steps=40, eval_every=10,
                       checkpoint_every=10, lr_boundaries=(1000, 2000),
                       lr_values=(0.5, 0.5, 0.5))
  summary = loop.Trainer(worse).train()
  assert summary['val_nme'] > best['nme']
  assert workdir_lib.best_record(str(tmp_path)) == best
  assert _best_nme_in_checkpoint(tmp_path) == pytest.approx(best['nme'])
  assert tf.train.latest_checkpoint(str(tmp_path / 'best')).endswith('ckpt-30')


def test_best_on_disk_wins_over_a_stale_latest_checkpoint(data_dir, tmp_path):
  # A kill between saving best/ and checkpoints/ leaves the latest checkpoint
  # with an older best NME: the resumed run must still compare against best/.
  loop.Trainer(small_config(data_dir, tmp_path, train_steps=10,
                            eval_every=10, checkpoint_every=10)).train()
  best_nme = workdir_lib.best_record(str(tmp_path))['nme']
  for name in os.listdir(tmp_path / 'checkpoints'):
    os.remove(tmp_path / 'checkpoints' / name)
  resumed = loop.Trainer(small_config(data_dir, tmp_path, train_steps=20,
                                      eval_every=10, checkpoint_every=10))
  assert resumed.step == 0
  assert float(resumed.best_nme.numpy()) == pytest.approx(best_nme)


@pytest.mark.parametrize('override,flag', [
    (dict(input_size=100), '--input_size'),
    (dict(head='bogus'), '--head'),
    (dict(alpha=0.0), '--alpha'),
    (dict(min_scale=2.0), '--min_scale'),
    (dict(keep_checkpoints=0), '--keep_checkpoints'),
    (dict(extra_fraction=0.3), '--extra_data_dir and --extra_fraction'),
    (dict(extra_data_dir='x', extra_fraction=1.0), '--extra_fraction'),
])
def test_a_rejected_flag_writes_nothing(data_dir, tmp_path, override, flag):
  with pytest.raises(ValueError, match=flag):
    loop.Trainer(small_config(data_dir, tmp_path / 'run', **override))
  assert not (tmp_path / 'run').exists()
  # The corrected run is not refused as "a workdir cannot change its network".
  loop.Trainer(small_config(data_dir, tmp_path / 'run', train_steps=1)).train()


def test_bad_init_weights_writes_nothing(data_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match='--init_weights'):
    loop.Trainer(small_config(data_dir, tmp_path / 'run',
                              init_weights=str(tmp_path / 'none.h5')))
  assert not (tmp_path / 'run').exists()


def test_broken_config_json_is_named(data_dir, tmp_path):
  loop.Trainer(small_config(data_dir, tmp_path, train_steps=1)).train()
  (tmp_path / 'config.json').write_text('')
  with pytest.raises(ValueError, match='config.json is not valid JSON'):
    workdir_lib.read_config(str(tmp_path))
  with pytest.raises(ValueError, match='config.json is not valid JSON'):
    loop.Trainer(small_config(data_dir, tmp_path, train_steps=2))


def test_latest_checkpoint_is_the_checkpoints_folder(data_dir, tmp_path):
  loop.Trainer(small_config(data_dir, tmp_path, train_steps=10,
                            checkpoint_every=5)).train()
  path = workdir_lib.checkpoint_path(str(tmp_path), 'latest')
  assert path == os.path.join(str(tmp_path), workdir_lib.CHECKPOINTS, 'ckpt-10')
  with pytest.raises(ValueError, match='--checkpoint'):
    workdir_lib.checkpoint_path(str(tmp_path), 'checkpoints')


def test_without_validation_shards_training_runs_and_says_so(tmp_path):
  _, shards = faces.make_faces(str(tmp_path / 'faces'), num_images=12,
                               val_fraction=0.0)
  messages = []
  cfg = small_config(shards, tmp_path / 'run', train_steps=6, eval_every=3,
                     checkpoint_every=3)
  summary = loop.train(cfg, log=messages.append)
  assert summary['step'] == 6 and summary['val_nme'] is None
  assert any('without validation' in m for m in messages)
  assert not (tmp_path / 'run' / 'best').exists()
  assert workdir_lib.checkpoint_path(str(tmp_path / 'run'), 'best').endswith(
      'ckpt-6')
  # Resuming does not crash at the first evaluation either.
  cfg = small_config(shards, tmp_path / 'run', train_steps=9, eval_every=3,
                     checkpoint_every=3)
  assert loop.train(cfg, log=messages.append)['step'] == 9


def test_mixed_float16_counts_the_optimizer_steps(data_dir, tmp_path):
  # Keras' loss scale starts at 2**15: the first float16 gradients overflow
  # and their updates are skipped. The run must count applied updates only
  # and not take an overflow for a NaN.
  cfg = small_config(data_dir, tmp_path, train_steps=4, log_every=1,
                     checkpoint_every=4, precision='mixed_float16')
  trainer = loop.Trainer(cfg)
  try:
    summary = trainer.train()
  finally:
    keras.mixed_precision.set_global_policy('float32')
  assert summary['step'] == 4 == int(trainer.optimizer.iterations.numpy())
  assert workdir_lib.checkpoint_path(str(tmp_path), 'latest').endswith('ckpt-4')


def test_script_errors_are_one_line(tmp_path):
  proc = _run_script(f'--data_dir={tmp_path / "nothing"}',
                     f'--workdir={tmp_path / "run"}')
  output, _ = proc.communicate(timeout=120)
  assert proc.returncode != 0
  assert 'Traceback' not in output
  assert f'train_loop: {tmp_path / "nothing"}' in output
  assert not (tmp_path / 'run').exists()


def test_corrupt_train_shard_is_named(data_dir, tmp_path):
  copy = tmp_path / 'data'
  shutil.copytree(data_dir, copy)
  shard = sorted(copy.glob('train-*.tfrecord'))[1]
  raw = bytearray(shard.read_bytes())
  raw[len(raw) // 2] ^= 0xFF
  shard.write_bytes(bytes(raw))
  trainer = loop.Trainer(small_config(str(copy), tmp_path / 'run',
                                      train_steps=200, eval_every=10_000,
                                      checkpoint_every=10_000))
  with pytest.raises(reader.CorruptShard, match=shard.name):
    trainer.train()


def test_mixed_folder_is_read_in_training(data_dir, tmp_path):
  # Mixed in, a corrupt shard of the other folder is met and named.
  extra = tmp_path / 'extra'
  shutil.copytree(data_dir, extra)
  for shard in extra.glob('train-*.tfrecord'):
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
  trainer = loop.Trainer(small_config(data_dir, tmp_path / 'run',
                                      train_steps=200, checkpoint_every=10_000,
                                      extra_data_dir=str(extra),
                                      extra_fraction=0.5))
  with pytest.raises(reader.CorruptShard, match=str(extra)):
    trainer.train()
  # An extra folder without train faces is refused before anything is written.
  no_train = tmp_path / 'no_train'
  no_train.mkdir()
  manifest = json.loads((extra / records.MANIFEST).read_text())
  manifest['splits'] = {'val': manifest['splits']['val']}
  (no_train / records.MANIFEST).write_text(json.dumps(manifest))
  with pytest.raises(ValueError, match="no faces in split 'train'"):
    loop.Trainer(small_config(data_dir, tmp_path / 'run2',
                              extra_data_dir=str(no_train), extra_fraction=0.5))
  assert not (tmp_path / 'run2').exists()


def _scalars(logdir, tag):
  return {event.step: float(tf.make_ndarray(value.tensor))
          for name in os.listdir(logdir)
          for event in tf.compat.v1.train.summary_iterator(
              os.path.join(logdir, name))
          for value in event.summary.value if value.tag == tag}


def test_steps_per_loop_changes_no_result(data_dir, tmp_path):
  runs = {}
  for steps_per_loop in (1, 4):
    workdir = tmp_path / str(steps_per_loop)
    keras.utils.set_random_seed(7)
    # 10 steps: calls of 4, 4 and a last one of 2.
    trainer = loop.Trainer(small_config(
        data_dir, workdir, train_steps=10, checkpoint_every=4, log_every=4,
        deterministic=True, steps_per_loop=steps_per_loop))
    summary = trainer.train()
    runs[steps_per_loop] = (
        summary['step'], [w.numpy() for w in trainer.model.weights],
        sorted(os.listdir(workdir / 'checkpoints')),
        _scalars(str(workdir / 'train'), 'loss'))
  (step1, weights1, saved1, losses1), (step4, weights4, saved4, losses4) = (
      runs[1], runs[4])
  assert step1 == step4 == 10
  for a, b in zip(weights1, weights4):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert saved1 == saved4 and 'ckpt-10.index' in saved4
  assert sorted(losses4) == [4, 8]
  assert losses4 == pytest.approx(losses1, rel=1e-6)


@pytest.mark.parametrize('override', [
    dict(steps_per_loop=3),  # Divides none of 10_000, 10, 5.
    dict(steps_per_loop=5, eval_every=12),  # Divides all but --eval_every.
])
def test_steps_per_loop_must_divide_the_periods(override, tmp_path):
  with pytest.raises(ValueError, match=(
      f'--steps_per_loop={override["steps_per_loop"]} must divide '
      '--eval_every=.*, --checkpoint_every=.*, --log_every=')):
    config.validate_config(small_config('unused', tmp_path, **override))


def test_a_call_stops_at_every_step_that_logs_saves_or_ends(tmp_path):
  cfg = small_config('unused', tmp_path, train_steps=30, log_every=4,
                     checkpoint_every=8, eval_every=12, steps_per_loop=4)
  calls = {step: loop.steps_in_call(cfg, step, validates=True)
           for step in (0, 3, 8, 10, 28)}
  # 3: after a skipped update; 10: after a resume; 28: the run's end is 30.
  assert calls == {0: 4, 3: 1, 8: 4, 10: 2, 28: 2}


def test_memory_cache_that_does_not_fit_writes_nothing(data_dir, tmp_path,
                                                       monkeypatch):
  monkeypatch.setattr(reader, 'available_memory', lambda: 10**6)
  with pytest.raises(ValueError, match='--cache=memory: .* bytes .*1,000,000 '
                     'bytes'):
    loop.Trainer(small_config(data_dir, tmp_path / 'run', cache='memory'))
  assert not (tmp_path / 'run').exists()


def test_cached_run_trains(data_dir, tmp_path):
  cfg = small_config(data_dir, tmp_path / 'run', train_steps=4,
                     checkpoint_every=4, cache=str(tmp_path / 'cache'))
  assert loop.Trainer(cfg).train()['step'] == 4


def test_the_run_says_how_long_it_will_take_and_nme_in_percent(data_dir,
                                                               tmp_path):
  said = []
  cfg = small_config(data_dir, tmp_path, train_steps=loop.ETA_STEPS + 3,
                     checkpoint_every=loop.ETA_STEPS + 3)
  summary = loop.train(cfg, log=said.append)
  (eta,) = [line for line in said if 's per step' in line]
  assert re.fullmatch(r'\d+\.\d\d s per step: 2 steps to go, about 0 h 00 '
                      r'min \(ends around \w+ \d\d:\d\d, without validation '
                      r'time\)', eta)
  assert loop.eta_line(0.5, 7_200, now=0).startswith(
      '0.50 s per step: 7,200 steps to go, about 1 h 00 min')
  assert re.fullmatch(r'Training ended \(finished\) at step 13, started at 0; '
                      r'best validation NME: \d+\.\d{3}%\.',
                      loop.summary_line(summary))
