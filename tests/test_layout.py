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


def _imported_modules(path):
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name.split('.')[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      yield node.module.split('.')[0]


def test_no_module_imports_a_script():
  importers = {os.path.relpath(path, REPO): sorted(set(SCRIPTS) & set(
      _imported_modules(path))) for path in _python_files()}
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


def test_install_puts_only_the_library_packages_in_site_packages():
  options = setupcfg.read_configuration(os.path.join(REPO, 'setup.cfg'))[
      'options']
  assert not options.get('py_modules')
  on_disk = {os.path.basename(os.path.dirname(p))
             for p in glob.glob(os.path.join(REPO, '*', '__init__.py'))}
  assert set(options['packages']) == on_disk - {'tests', 'bench'}
  assert not set(options['packages']) & set(SCRIPTS)


def test_numpy_requirement_has_what_the_code_uses():
  requirements = setupcfg.read_configuration(os.path.join(
      REPO, 'setup.cfg'))['options']['install_requires']
  (numpy,) = [Requirement(r) for r in requirements
              if Requirement(r).name == 'numpy']
  # model/metrics.py uses np.trapezoid, new in NumPy 2.0.
  assert not numpy.specifier.contains('1.26.4')
  assert numpy.specifier.contains('2.0.0')
