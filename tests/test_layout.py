"""The code's layout: scripts are thin and run, never imported or installed."""

import ast
import glob
import os

from packaging.requirements import Requirement
from setuptools.config import setupcfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ('train_loop', 'evaluate', 'export', 'webcam')
MAX_SCRIPT_LINES = 40


def _python_files():
  for path in glob.glob(os.path.join(REPO, '**', '*.py'), recursive=True):
    if not os.path.relpath(path, REPO).startswith('.'):
      yield path


def imported_modules(path):
  """Top-level names a file imports (absolute imports)."""
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name.split('.')[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      yield node.module.split('.')[0]


def test_no_module_imports_a_script():
  importers = {os.path.relpath(path, REPO): sorted(set(SCRIPTS) & set(
      imported_modules(path))) for path in _python_files()}
  assert not {k: v for k, v in importers.items() if v}


def test_scripts_are_flags_and_one_main():
  for name in SCRIPTS:
    path = os.path.join(REPO, f'{name}.py')
    with open(path, encoding='utf-8') as f:
      source = f.read()
    functions = [node.name for node in ast.parse(source).body
                 if isinstance(node, ast.FunctionDef)]
    assert functions == ['main'], name
    assert len(source.splitlines()) <= MAX_SCRIPT_LINES, name


def _setup_cfg():
  return setupcfg.read_configuration(os.path.join(REPO, 'setup.cfg'))


def test_install_puts_only_the_runtime_in_site_packages():
  options = _setup_cfg()['options']
  assert not options.get('py_modules')
  # Generic names (model, pipeline, cli, ...) would shadow a user's own.
  assert options['packages'] == ['facelandmark']
  assert options['entry_points']['console_scripts'] == [
      'facelandmark = facelandmark.command:main']


def test_the_default_install_pulls_no_tensorflow():
  options = _setup_cfg()['options']
  names = {Requirement(r).name for r in options['install_requires']}
  assert not names & {'tensorflow', 'tensorboard', 'keras', 'h5py',
                      'matplotlib'}
  assert {'ai-edge-litert', 'opencv-python-headless', 'numpy'} <= names
  extras = options['extras_require']
  assert 'tensorflow' in {Requirement(r).name for r in extras['train']}
  # README's install command ([test]) sets up the training side too.
  assert 'facelandmark[train]' in extras['test']


def test_package_data_holds_the_shipped_model_and_the_detectors():
  patterns = _setup_cfg()['options']['package_data']['facelandmark']
  shipped = [p for p in glob.glob(os.path.join(REPO, 'facelandmark', 'models',
                                               '*'))]
  packaged = {os.path.join(REPO, 'facelandmark', f) for pattern in patterns
              for f in [os.path.relpath(p, os.path.join(REPO, 'facelandmark'))
                        for p in glob.glob(os.path.join(
                            REPO, 'facelandmark', pattern))]}
  assert set(shipped) == packaged
  names = {os.path.basename(p) for p in shipped}
  assert {'landmarks_float16.tflite', 'metadata.json',
          'face_detection_short_range.tflite'} <= names


def test_numpy_requirement_has_what_the_code_uses():
  requirements = _setup_cfg()['options']['install_requires']
  (numpy,) = [Requirement(r) for r in requirements
              if Requirement(r).name == 'numpy']
  # model/metrics.py uses np.trapezoid, new in NumPy 2.0.
  assert not numpy.specifier.contains('1.26.4')
  assert numpy.specifier.contains('2.0.0')
