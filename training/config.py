"""The training run's configuration: one dataclass, its flags and its checks.

`TrainConfig` is saved as WORKDIR/config.json (training/workdir.py); its fields
are train_loop.py's flags (facelandmark/config_flags.py).
"""

import dataclasses

from facelandmark.config_flags import option
from model import losses
from model import network
from pipeline import augment
from pipeline import views

# Fields that fix the network and its input view: a workdir cannot change them.
ARCHITECTURE_FIELDS = ('input_size', 'alpha', 'head', 'head_width', 'view_scale',
                       'box')
STRATEGIES = ('default', 'mirrored', 'multi_worker')
PRECISIONS = ('float32', 'mixed_float16', 'mixed_bfloat16')


@dataclasses.dataclass
class TrainConfig:
  """Everything a run depends on; saved as workdir/config.json."""
  data_dir: str = option(help='Folder of shards made by '
                         '`python -m pipeline.prepare`.')
  workdir: str = option(help='Run folder: config, checkpoints, TensorBoard '
                        'logs. Running again resumes.')
  extra_data_dir: str = option(
      '', 'Another prepared folder (same --image_size) whose train faces are '
      'mixed into training, e.g. the YouTube frames; validation stays on '
      '--data_dir.', group='data')
  extra_fraction: float = option(
      0.0, 'Share of the training faces drawn from --extra_data_dir (each '
      'face is, with this probability).', group='data')
  batch_size: int = option(16, 'Global batch size (split over replicas).',
                           group='schedule')
  train_steps: int = option(120_000, 'Total optimizer steps.', group='schedule')
  lr_boundaries: tuple[int, ...] = option(
      (50_000, 90_000), 'Steps where the learning rate changes.',
      group='schedule')
  lr_values: tuple[float, ...] = option(
      (1e-3, 2e-4, 1e-4), 'Learning rates: one more than boundaries.',
      group='schedule')
  amsgrad: bool = option(True, 'Adam with the AMSGrad variant (the prototype).',
                         group='schedule')
  loss: str = option('mse', 'Training loss.', losses.LOSSES, group='schedule')
  input_size: int = option(224, 'Network input side in pixels (multiple of '
                           '16, at least 32).', group='model')
  alpha: float = option(1.0, 'MobileNetV2 width multiplier.', group='model')
  head: str = option('conv', 'Regression head.', network.HEADS, group='model')
  head_width: int = option(128, 'Channels of the head layers.', group='model')
  bn_momentum: float = option(
      0.99, 'BatchNorm moving-average momentum (Keras builds MobileNetV2 with '
      '0.999, too slow for short runs).', group='model')
  init_weights: str = option('', 'Backbone weights file (legacy Keras .h5, '
                             'e.g. from `python -m model.convert_imagenet`). '
                             'Default: the Keras cache if it has the ImageNet '
                             'file, else random.', group='model')
  view_scale: float = option(1.25, 'Network view side / face-box side.',
                             group='model')
  box: str = option('landmarks', 'Face box the view is built on: the tight '
                    'landmark box (300-W convention) or the annotation box.',
                    views.BOXES, group='model')
  max_rotation: float = option(45.0, 'Augmentation: rotation range, degrees '
                               'either way.', group='augmentation')
  min_scale: float = option(0.7, 'Augmentation: smallest face scale in the '
                            'view.', group='augmentation')
  max_scale: float = option(1.0, 'Augmentation: largest face scale in the '
                            'view.', group='augmentation')
  max_shift: float = option(0.05, 'Augmentation: shift range, fraction of the '
                            'view.', group='augmentation')
  flip: bool = option(True, 'Augmentation: random horizontal flip (with point '
                      'mirroring).', group='augmentation')
  brightness: float = option(0.2, 'Augmentation: brightness jitter.',
                             group='augmentation')
  contrast: float = option(0.3, 'Augmentation: contrast jitter.',
                           group='augmentation')
  saturation: float = option(0.3, 'Augmentation: saturation jitter.',
                             group='augmentation')
  occlusion: float = option(0.0, 'Augmentation: probability of a random '
                            'occluding box.', group='augmentation')
  greyscale: float = option(0.0, 'Augmentation: probability of a grey '
                            'view.', group='augmentation')
  gamma: float = option(0.0, 'Augmentation: gamma range, pixel ** g with log g '
                        'uniform in [-log(1 + gamma), log(1 + gamma)].',
                        group='augmentation')
  blur: float = option(0.0, 'Augmentation: probability of a Gaussian blur '
                       '(sigma up to 1.5 view pixels).', group='augmentation')
  box_jitter: float = option(0.0, 'Augmentation: share of views built on a '
                             'detector-like box instead of --box (with the '
                             'four --box_* statistics below).',
                             group='augmentation')
  box_shift_mean: tuple[float, ...] = option(
      (0.0, 0.0), 'Detector box centre minus landmark box centre (x, y), in '
      'units of the landmark box size sqrt(w*h): mean.', group='augmentation')
  box_shift_std: tuple[float, ...] = option((0.0, 0.0), 'The same: '
                                            'deviation.', group='augmentation')
  box_log_scale_mean: tuple[float, ...] = option(
      (0.0, 0.0), 'log(detector box side / landmark box side) for (w, h): '
      'mean.', group='augmentation')
  box_log_scale_std: tuple[float, ...] = option((0.0, 0.0), 'The same: '
                                                'deviation.',
                                                group='augmentation')
  eval_every: int = option(2000, 'Validate every this many steps.',
                           group='output')
  checkpoint_every: int = option(1000, 'Save a checkpoint every this many '
                                 'steps.', group='output')
  log_every: int = option(100, 'Write training summaries every this many '
                          'steps.', group='output')
  steps_per_loop: int = option(
      1, 'Training steps per compiled call: fewer Python round trips (use '
      'e.g. 50-100 on a GPU); must divide --eval_every, --checkpoint_every and '
      '--log_every. A stop signal is handled between calls.', group='schedule')
  cache: str = option(
      '', "Cache the decoded training faces after the first epoch: '' (decode "
      "every epoch), 'memory' (refused when larger than available memory), "
      'or a folder for a file cache (a fast local disk; reused by later runs '
      'on the same shards).', group='data')
  keep_checkpoints: int = option(3, 'How many latest checkpoints to keep.',
                                 group='output')
  eval_batch_size: int = option(64, 'Batch size for validation.',
                                group='output')
  num_summary_images: int = option(8, 'Validation faces drawn into '
                                   'TensorBoard.', group='output')
  strategy: str = option('default', 'tf.distribute strategy.', STRATEGIES,
                         group='schedule')
  precision: str = option('float32', 'Compute precision.', PRECISIONS,
                          group='schedule')
  jit_compile: bool = option(False, 'XLA-compile the step (measure first: '
                             'slower on CPU).', group='schedule')
  seed: int = option(0, 'Seed for initialisation, shuffling and '
                     'augmentation.', group='schedule')
  deterministic: bool = option(False, 'Deterministic input order and ops '
                               '(repeatable runs).', group='schedule')

  def training_mix(self):
    """reader.make_dataset's `mix` for these flags."""
    if not self.extra_data_dir:
      return ()
    return ((self.extra_data_dir, self.extra_fraction),)

  def augment_config(self):
    return augment.AugmentConfig(
        max_rotation=self.max_rotation, min_scale=self.min_scale,
        max_scale=self.max_scale, max_shift=self.max_shift, flip=self.flip,
        brightness=self.brightness, contrast=self.contrast,
        saturation=self.saturation, occlusion=self.occlusion,
        greyscale=self.greyscale, gamma=self.gamma, blur=self.blur,
        box_jitter=self.box_jitter, box_shift_mean=self.box_shift_mean,
        box_shift_std=self.box_shift_std,
        box_log_scale_mean=self.box_log_scale_mean,
        box_log_scale_std=self.box_log_scale_std)


def validate_config(cfg):
  """Rejects every flag value that would fail later, naming the flag, before
  anything is written."""
  def need(ok, message):
    if not ok:
      raise ValueError(message)
  need(bool(cfg.data_dir), '--data_dir is required')
  need(bool(cfg.workdir), '--workdir is required')
  need(bool(cfg.extra_data_dir) == (cfg.extra_fraction != 0.0),
       '--extra_data_dir and --extra_fraction go together: got '
       f'--extra_data_dir={cfg.extra_data_dir!r}, '
       f'--extra_fraction={cfg.extra_fraction}')
  need(0.0 <= cfg.extra_fraction < 1.0, f'--extra_fraction must be in '
       f'[0, 1), got {cfg.extra_fraction}')
  need(len(cfg.lr_values) == len(cfg.lr_boundaries) + 1,
       f'--lr_values needs one more value than --lr_boundaries: got '
       f'{len(cfg.lr_values)} values for {len(cfg.lr_boundaries)} boundaries')
  need(list(cfg.lr_boundaries) == sorted(set(cfg.lr_boundaries)) and
       all(b > 0 for b in cfg.lr_boundaries),
       f'--lr_boundaries must be positive and increasing, got '
       f'{list(cfg.lr_boundaries)}')
  need(all(v > 0 for v in cfg.lr_values),
       f'--lr_values must be positive, got {list(cfg.lr_values)}')
  for name in ('train_steps', 'batch_size', 'eval_every', 'checkpoint_every',
               'log_every', 'steps_per_loop', 'keep_checkpoints',
               'eval_batch_size', 'head_width'):
    need(getattr(cfg, name) > 0,
         f'--{name} must be positive, got {getattr(cfg, name)}')
  periods = ('eval_every', 'checkpoint_every', 'log_every')
  need(all(getattr(cfg, name) % cfg.steps_per_loop == 0 for name in periods),
       f'--steps_per_loop={cfg.steps_per_loop} must divide '
       + ', '.join(f'--{name}={getattr(cfg, name)}' for name in periods))
  need(cfg.num_summary_images >= 0, '--num_summary_images must not be '
       f'negative, got {cfg.num_summary_images}')
  need(0.0 < cfg.bn_momentum < 1.0, f'--bn_momentum must be in (0, 1), got '
       f'{cfg.bn_momentum}')
  need((cfg.head == 'pip') == (cfg.loss == 'pip'),
       f'--head=pip trains with --loss=pip (PIPNet\'s loss on its maps) and '
       f'only it: got --head={cfg.head} --loss={cfg.loss}')
  need(cfg.input_size >= 32 and cfg.input_size % 16 == 0,
       f'--input_size must be a multiple of 16 and >= 32, got '
       f'{cfg.input_size}')
  need(cfg.alpha > 0, f'--alpha must be positive, got {cfg.alpha}')
  need(cfg.view_scale > 0, f'--view_scale must be positive, got '
       f'{cfg.view_scale}')
  for name, allowed in (('loss', losses.LOSSES), ('head', network.HEADS),
                        ('strategy', STRATEGIES), ('box', views.BOXES),
                        ('precision', PRECISIONS)):
    need(getattr(cfg, name) in allowed, f'--{name} must be one of {allowed}, '
         f'got {getattr(cfg, name)!r}')
  try:
    cfg.augment_config()
  except ValueError as e:
    raise ValueError(f'augmentation flags (--min_scale, --max_scale, '
                     f'--max_rotation, --box_jitter, ...): {e}') from e
