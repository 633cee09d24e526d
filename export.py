"""Exports a training workdir as a SavedModel and TF Lite files.

  python export.py --workdir=RUN --export_dir=EXPORT \\
      [--tflite=float32,float16,int8 --data_dir=DATA]

What EXPORT/ holds: exporting/export_lib.py (and its saved_model and tflite
modules for the signatures and files).
"""

import training.tf_logs  # pylint: disable=unused-import  # Before TensorFlow.

from exporting import export_lib
from facelandmark import config_flags


def main(argv):
  del argv
  export_lib.export(config_flags.config_from_flags(export_lib.ExportConfig))


if __name__ == '__main__':
  sections = config_flags.define_flags(export_lib.ExportConfig,
                                       required=('workdir', 'export_dir'))
  config_flags.run(main, 'export', sections)
