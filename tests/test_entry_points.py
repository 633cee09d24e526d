"""The training-side commands as a user runs them: --help, TensorFlow's logs."""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = (['train_loop.py'], ['evaluate.py'], ['export.py'],
            ['-m', 'pipeline.prepare'])
# A C++ INFO line TensorFlow prints on import on CPUs with AVX and the like.
_CPU_NOTICE = 'cpu_feature_guard'


def _help(command, level=None):
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  if level is not None:
    env['TF_CPP_MIN_LOG_LEVEL'] = level
  return subprocess.run([sys.executable, *command, '--help'], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300,
                        check=False)


@pytest.mark.parametrize('command', COMMANDS, ids=' '.join)
def test_help_is_readable_and_tensorflow_quiet(command):
  result = _help(command)
  assert _CPU_NOTICE not in result.stderr
  usage = [line for line in result.stdout.splitlines()[:6]
           if line.strip().startswith(('python', '--', '['))]
  for line in usage:
    # A continued usage line ends in one backslash: none runs two together.
    assert not re.search(r'\S {2,}\S', line), line


def test_a_log_level_the_user_set_is_kept():
  plain = subprocess.run([sys.executable, '-c', 'import tensorflow'],
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='0'),
                         capture_output=True, text=True, timeout=300,
                         check=False)
  if _CPU_NOTICE not in plain.stderr:
    pytest.skip('this CPU has no instructions TensorFlow tells about')
  assert _CPU_NOTICE in _help(['train_loop.py'], level='0').stderr
