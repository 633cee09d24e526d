"""tf.distribute: the strategy, which worker is the chief, where each writes.

Under MultiWorkerMirroredStrategy every worker takes part in each save, but
only the chief's copy is kept: the others write into a scratch folder that is
removed after the save, and every worker restores from the chief's folder.
"""

import os

import tensorflow as tf


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
  """Where this worker saves a checkpoint meant for `path`."""
  if is_chief(strategy):
    return path
  _, task_id = _task(strategy)
  return os.path.join(path, f'.worker_{task_id}_tmp')


def save(manager, strategy, checkpoint_number):
  """manager.save on every worker; non-chief scratch copies are removed."""
  manager.save(checkpoint_number=checkpoint_number)
  if not is_chief(strategy):
    tf.io.gfile.rmtree(manager.directory)
