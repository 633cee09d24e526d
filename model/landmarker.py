"""The Landmarker (facelandmark/landmarker.py) on TensorFlow models too: an
export's SavedModel and Keras nets, for training, evaluation and export.

A SavedModel is a program: loading one runs its TensorFlow graph, so load
only SavedModels you trust and prefer the .tflite files beside it (data for
the TF Lite interpreter; all the runtime, `facelandmark`, runs).

  landmarker = Landmarker.load('export/')   # Fastest file scoring the same.
  landmarker = Landmarker.load('export/', prefer='saved_model')
  landmarker = Landmarker.from_keras(net, input_size=224, view_scale=1.25)
"""

import os

import tensorflow as tf

from facelandmark import landmarker as runtime

# The shipped export: the SavedModel, with the runtime's float16 file and
# metadata.json linked in from the package (facelandmark/models/).
SHIPPED_MODEL = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'pretrained')
# The SavedModel signature with the network's own contract: float views in
# [0, 1] -> normalised landmarks. The .tflite files are converted from it.
VIEWS_SIGNATURE = 'views'
# What Landmarker.load(folder, prefer=...) runs: see there.
PREFER = ('fastest', 'saved_model')


def model_path(path, metadata, prefer='fastest'):
  """The file Landmarker.load(path, prefer=prefer) runs: a .tflite file or a
  SavedModel folder."""
  if os.path.basename(path) == runtime.SAVED_MODEL_PB:
    return os.path.dirname(path) or os.curdir
  if prefer == 'saved_model' or not os.path.isdir(path):
    return path
  name = runtime.fastest_equivalent(runtime.comparison_rows(metadata),
                                    set(os.listdir(path)))
  return os.path.join(path, name) if name else path


def _saved_model_views_fn(path):
  try:
    loaded = tf.saved_model.load(path)
  except Exception as e:  # pylint: disable=broad-except
    # OSError, ValueError, IndexError... depending on which part is broken.
    first_line = next(iter(str(e).splitlines()), '')
    raise ValueError(f'{path} is not a SavedModel TensorFlow can load: '
                     f'{type(e).__name__}: {first_line}') from e
  if VIEWS_SIGNATURE not in loaded.signatures:
    raise ValueError(f'{path}: SavedModel without a {VIEWS_SIGNATURE!r} '
                     'signature: not made by export.py')

  def predict(views):
    # Through `loaded`: the signature alone does not keep the variables alive.
    signature = loaded.signatures[VIEWS_SIGNATURE]
    return signature(views=tf.constant(views))['landmarks'].numpy()

  return predict


def _keras_views_fn(model):
  run = tf.function(lambda views: model(views, training=False),
                    reduce_retracing=True)
  return lambda views: run(tf.constant(views)).numpy()


class Landmarker(runtime.Landmarker):
  """runtime.Landmarker that also loads SavedModels and Keras nets."""

  @classmethod
  def load(cls, path=SHIPPED_MODEL, num_threads=None, prefer='fastest'):
    """From export.py's output.

    Args:
      path: a .tflite file; a SavedModel's saved_model.pb; or an export folder
        (the SavedModel with the .tflite files beside it), where `prefer`
        picks the file.
      num_threads: the TF Lite interpreter's threads (None: its default).
        TensorFlow's own threads are process-wide: see tf.config.threading.
      prefer: for a folder, 'fastest': the fastest .tflite file in it that
        scored like the SavedModel on the export's comparison (metadata.json;
        runtime.fastest_equivalent), else the SavedModel; 'saved_model': the
        SavedModel (module docstring: it is code).

    Raises:
      FileNotFoundError: no `path`, or no metadata.json beside it.
      ValueError: naming the file that is broken, and how.
    """
    if prefer not in PREFER:
      raise ValueError(f'prefer must be one of {PREFER}, got {prefer!r}')
    if not os.path.exists(path):
      raise FileNotFoundError(f'model {path} does not exist: export one with '
                              '`python export.py` or pass its path')
    metadata = runtime.read_metadata(path)
    source = model_path(path, metadata, prefer)
    if source.endswith('.tflite'):
      views_fn = runtime.tflite_views_fn(source, num_threads)
    elif os.path.isfile(os.path.join(source, runtime.SAVED_MODEL_PB)):
      views_fn = _saved_model_views_fn(source)
    else:
      raise ValueError(f'{path}: neither a .tflite file nor a SavedModel '
                       'folder')
    return cls(views_fn, metadata['input_size'], metadata['view_scale'],
               dict(metadata, path=source), source)

  @classmethod
  def from_keras(cls, model, input_size, view_scale):
    return cls(_keras_views_fn(model), input_size, view_scale)
