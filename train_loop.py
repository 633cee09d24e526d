"""Trains the landmark network on prepared shards, resumably, in one process.

  python train_loop.py --data_dir=DATA --workdir=RUN

The whole piecewise-constant schedule (by default the prototype's 1e-3 for 50k
steps, 2e-4 for 40k, 1e-4 for 30k) runs in this one process. The workdir's
layout is in training/workdir.py; running the same command again continues
where the last run stopped. Flags: the fields of training/config.py.
"""

import training.tf_logs  # pylint: disable=unused-import  # Before TensorFlow.

from absl import logging

from facelandmark import config_flags
from training import config
from training import loop


def main(argv):
  del argv
  summary = loop.train(config_flags.config_from_flags(config.TrainConfig))
  logging.info(loop.summary_line(summary))


if __name__ == '__main__':
  sections = config_flags.define_flags(config.TrainConfig,
                                       required=('data_dir', 'workdir'))
  config_flags.run(main, 'train_loop', sections)
