import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top,wrong-import-position
# (TensorFlow reads the log level when it is first imported.)
import pytest

import faces
from exporting import export_lib


@pytest.fixture(scope='session')
def tiny_export(tmp_path_factory):
  """A net trained 4 steps and exported (SavedModel and float32 TF Lite).

  Its data: 12 generated images of the 300-W test subsets in both layouts.
  Built once for every test file that only needs some trained model; tests
  write their own outputs elsewhere and leave these folders as they are.
  """
  root = str(tmp_path_factory.mktemp('tiny_export'))
  raw, shards = faces.make_faces(root, num_images=12,
                                 subsets=faces.TEST_SUBSETS, layout='both')
  workdir = faces.train_tiny(shards, os.path.join(root, 'work'), steps=4)
  export_dir = os.path.join(root, 'exported')
  export_lib.export(export_lib.ExportConfig(workdir, export_dir,
                                          tflite=('float32',)),
                    log=lambda *_: None)
  return dict(raw=raw, shards=shards, workdir=workdir, export_dir=export_dir)
