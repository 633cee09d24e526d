"""TF Lite models run by LiteRT (PyPI ai-edge-litert, Google's TF Lite
runtime) where it is installed, else by TensorFlow's tf.lite; one allocated
interpreter per calling thread.

An interpreter keeps its tensors between set_tensor, invoke and get_tensor:
two threads sharing one overwrite each other's input and read each other's
output (or fail with RuntimeError). `Model.interpreter()` gives each thread
its own, made from the same bytes on the thread's first call.
"""

import contextlib
import functools
import logging
import os
import sys
import threading
import warnings

log = logging.getLogger('facelandmark')


@functools.cache
def runtime():
  """(Interpreter class, 'LiteRT <version>' or 'tensorflow.lite <version>');
  logged once at debug level
  (the command prints it beside the model)."""
  try:
    from ai_edge_litert import interpreter as litert  # pylint: disable=import-outside-toplevel
    from importlib import metadata  # pylint: disable=import-outside-toplevel
    found = (litert.Interpreter,
             f'LiteRT {metadata.version("ai-edge-litert")}')
  except ImportError:
    # TensorFlow's C++ start-up notes (CPU features, no CUDA) are INFO lines;
    # a user's own setting wins.
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    try:
      import tensorflow as tf  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError(
          'no TF Lite runtime: pip install ai-edge-litert (or tensorflow '
          'where LiteRT has no wheel)') from e
    found = (tf.lite.Interpreter, f'tensorflow.lite {tf.__version__}')
  log.debug('TF Lite runtime: %s', found[1])
  return found


class Model:
  """A .tflite file, checked on construction, with an allocated interpreter
  per thread (`interpreter()`).

  Attributes:
    path: the file.
    inputs, outputs: the interpreter's input and output details (the same
      for every thread's interpreter).
  """

  def __init__(self, path, num_threads=None):
    """Raises FileNotFoundError for no file, ValueError naming `path` for a
    file TF Lite cannot run."""
    if not os.path.isfile(path):
      raise FileNotFoundError(f'{path}: no such TF Lite file')
    with open(path, 'rb') as f:
      self._flatbuffer = f.read()
    # Bytes 4..8 of a TF Lite flatbuffer are its file identifier.
    if self._flatbuffer[4:8] != b'TFL3':
      raise ValueError(f'{path} is not a TF Lite flatbuffer (no TFL3 file '
                       'identifier)')
    self.path, self._num_threads = path, num_threads
    self._local = threading.local()
    try:
      first = self.interpreter()
    except (ValueError, RuntimeError) as e:
      raise ValueError(f'{path} is not a TF Lite flatbuffer TF Lite can run: '
                       f'{e}') from e
    self.inputs = first.get_input_details()
    self.outputs = first.get_output_details()

  def interpreter(self):
    """The calling thread's allocated interpreter."""
    made = getattr(self._local, 'interpreter', None)
    if made is None:
      interpreter_class, _ = runtime()
      with warnings.catch_warnings():
        # TF 2.21 warns that tf.lite.Interpreter moves to LiteRT; it works.
        warnings.simplefilter('ignore', UserWarning)
        # From memory, not model_path: only then is the flatbuffer verified;
        # a truncated file given by path kills the process (TF 2.21).
        made = interpreter_class(model_content=self._flatbuffer,
                                 num_threads=self._num_threads)
      with _quiet_stderr():
        made.allocate_tensors()
      self._local.interpreter = made
    return made


# TF Lite's C++ side prints "INFO: Created TensorFlow Lite XNNPACK delegate
# for CPU." on the process's stderr when the first interpreter allocates, and
# no setting turns it off. Its failures come back as exceptions with their
# message, so its stderr is dropped while it allocates. One thread at a time:
# the file descriptor is the process's.
_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _quiet_stderr():
  try:
    fd = sys.stderr.fileno()
  except (AttributeError, OSError, ValueError):  # No real stderr: nothing to do.
    yield
    return
  with _STDERR_LOCK:
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
      with open(os.devnull, 'wb') as devnull:
        os.dup2(devnull.fileno(), fd)
      yield
    finally:
      os.dup2(saved, fd)
      os.close(saved)
