"""The optimizer, its schedule and the compiled training step.

The step augments the batch in-graph (pipeline/augment.py), so augmentation
runs where the model runs, then takes one optimizer step on every replica.
"""

import keras
import tensorflow as tf

from model import network
from pipeline import augment
from pipeline import views


def learning_rate_schedule(boundaries, values):
  """Rate as a function of the number of updates already done.

  `boundaries` count updates: (50000, 90000) gives exactly 50,000 updates at
  the first rate. Keras switches only after step > boundary, hence the -1.
  """
  return keras.optimizers.schedules.PiecewiseConstantDecay(
      [int(b) - 1 for b in boundaries], [float(v) for v in values])


def make_optimizer(cfg):
  """Adam on the piecewise schedule; loss-scaled under mixed_float16.

  Build it in the strategy's scope. Its `iterations` counts applied updates:
  the loop's step (a loss-scale overflow skips an update without counting).
  """
  optimizer = keras.optimizers.Adam(
      learning_rate_schedule(cfg.lr_boundaries, cfg.lr_values),
      amsgrad=cfg.amsgrad)
  if cfg.precision == 'mixed_float16':
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


def make_train_step(cfg, model, optimizer, loss_fn, strategy):
  """train_step(iterator, steps=1) -> (summed loss, norm of the applied
  gradient) of the last of `steps` steps, all run in one tf.function call.

  The last step's, not a mean: the values a one-step call would return at the
  same step, so logs do not depend on how many steps a call runs. Several
  steps per call save a Python round trip per step (what orbit's
  steps_per_loop does); `steps` is a tensor, so every count shares one trace.
  """
  aug = cfg.augment_config()
  trained = network.training_outputs(model, cfg.head)
  scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

  @tf.function(jit_compile=cfg.jit_compile)
  def gradients(images, targets):
    with tf.GradientTape() as tape:
      predicted = trained(images, training=True)
      loss = tf.nn.compute_average_loss(
          loss_fn(targets, predicted), global_batch_size=cfg.batch_size)
      objective = optimizer.scale_loss(loss) if scaled else loss
    return loss, tape.gradient(objective, model.trainable_variables)

  def replica_step(batch):
    context = tf.distribute.get_replica_context()
    # A stateless seed per (run, step, replica): a resumed run repeats the
    # augmentation exactly, and replicas do not repeat each other's.
    seed = tf.stack([tf.cast(cfg.seed * 1000 + context.replica_id_in_sync_group,
                             tf.int64),
                     tf.cast(optimizer.iterations, tf.int64)])
    boxes = views.face_boxes(batch['landmarks'], batch['box'], cfg.box)
    images, targets = augment.augment(batch['image'], batch['landmarks'],
                                      boxes, seed, cfg.input_size,
                                      cfg.view_scale, aug)
    loss, grads = gradients(images, targets)
    replicas = context.num_replicas_in_sync
    if replicas > 1:
      # The norm worth logging is the summed gradient's, which Keras forms
      # inside apply_gradients; form it here and hand each replica its share
      # so that Keras' own sum gives the same update.
      grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
      norm = tf.linalg.global_norm(grads)
      grads = [g / replicas for g in grads]
    else:
      norm = tf.linalg.global_norm(grads)
    if scaled:
      norm /= tf.cast(optimizer.dynamic_scale, norm.dtype)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss, norm

  @tf.function
  def train_steps(iterator, steps):
    loss = norm = tf.constant(0.0)
    for _ in tf.range(steps):
      losses, norms = strategy.run(replica_step, args=(next(iterator),))
      loss = strategy.reduce('SUM', losses, axis=None)
      # The norm is the same on every replica; take one.
      norm = strategy.experimental_local_results(norms)[0]
    return loss, norm

  def train_step(iterator, steps=1):
    return train_steps(iterator, tf.constant(steps, tf.int32))

  return train_step
