"""facelandmark/config_flags.py: flags typed from a config dataclass's
annotations, and --help grouped."""

import dataclasses
import os
import re
import subprocess
import sys
from typing import Optional

from absl import flags
import pytest

from evaluation import evaluate_lib
from exporting import export_lib
from facelandmark import config_flags
from facelandmark.config_flags import option
from training import config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class Example:
  path: str = option(help='Required path.')
  width: float = option(1, 'A float field with an int default.')
  count: Optional[int] = option(None, 'Unset by default.')
  steps: tuple[int, ...] = option((10, 20), 'Integers.')
  rates: tuple[float, ...] = option((0.5,), 'Floats.')
  fast: bool = option(False, 'A switch.')
  mode: str = option('a', 'A choice.', ('a', 'b'))


def _parse(*argv):
  values = flags.FlagValues()
  config_flags.define_flags(Example, required=('path',), flag_values=values)
  values(['program', *argv])
  return config_flags.config_from_flags(Example, flag_values=values)


def test_flags_follow_the_annotations():
  cfg = _parse('--path=p', '--width=0.35', '--count=3', '--steps=5e4,9e4',
               '--rates=1e-3,2e-4', '--fast', '--mode=b')
  assert cfg == Example('p', 0.35, 3, (50_000, 90_000), (1e-3, 2e-4), True,
                        'b')
  assert _parse('--path=p') == Example('p')


@pytest.mark.parametrize('argv', [
    ('--path=p', '--mode=c'),         # not a choice
    ('--path=p', '--count=1.5'),      # not an int
    ('--width=2',),                   # required flag missing
])
def test_bad_values_are_refused_at_parse_time(argv):
  with pytest.raises(flags.Error):
    _parse(*argv)


def test_a_list_element_of_the_wrong_type_names_the_flag():
  with pytest.raises(ValueError, match='--steps'):
    _parse('--path=p', '--steps=10,1.5')


def test_train_config_flags_round_trip():
  values = flags.FlagValues()
  config_flags.define_flags(config.TrainConfig, flag_values=values)
  values(['train', '--data_dir=d', '--workdir=w', '--alpha=0.35',
          '--lr_boundaries=100,200'])
  cfg = config_flags.config_from_flags(config.TrainConfig, flag_values=values)
  assert (cfg.alpha, cfg.lr_boundaries, cfg.lr_values) == (
      0.35, (100, 200), (1e-3, 2e-4, 1e-4))
  assert dataclasses.replace(cfg, alpha=1.0, lr_boundaries=(50_000, 90_000)
                             ) == config.TrainConfig('d', 'w')


def test_importing_the_library_defines_no_flags():
  code = ('import glob, importlib, os\n'
          'from absl import flags\n'
          'for init in sorted(glob.glob("*/__init__.py")):\n'
          '  package = os.path.dirname(init)\n'
          '  if package in ("tests", "bench"): continue\n'
          '  for path in sorted(glob.glob(package + "/*.py")):\n'
          '    importlib.import_module(path[:-3].replace("/", "."))\n'
          'print(sorted(set(flags.FLAGS) & {"data_dir", "workdir", "model",'
          ' "source", "output_dir"}))\n')
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO, check=True,
                       capture_output=True, text=True).stdout
  assert out.strip().splitlines()[-1] == '[]'


@dataclasses.dataclass
class Grouped:
  path: str = option(help='Required.', group='data')
  late: int = option(0, 'Output.', group='output')
  plain: int = option(0, 'No group.')
  rate: float = option(0.1, 'Schedule.', group='schedule')
  size: int = option(8, 'Model.', group='model')
  width: int = option(8, 'Model too.', group='model')


def test_help_sections_are_required_then_groups_in_order_then_the_rest():
  assert config_flags.help_sections(Grouped, required=('path',)) == [
      ('required', ['path']), ('model', ['size', 'width']),
      ('schedule', ['rate']), ('output', ['late']), ('other', ['plain'])]


def test_an_unknown_group_is_refused():
  with pytest.raises(ValueError, match='option group'):
    option(0, 'x', group='misc')


def _listed_by_heading(help_text):
  """{heading: [flag names]} in the order --help printed them."""
  listed = {}
  for line in help_text.splitlines():
    if re.fullmatch(r'[a-z]+:', line):
      heading = listed.setdefault(line[:-1], [])
    elif match := re.match(r'  --(?:\[no\])?(\w+):', line):
      heading.append(match.group(1))
  return listed


@pytest.mark.parametrize('program, config_class, required', [
    ('train_loop.py', config.TrainConfig, ('data_dir', 'workdir')),
    ('evaluate.py', evaluate_lib.EvalConfig, ('data_dir',)),
    ('export.py', export_lib.ExportConfig, ('workdir', 'export_dir')),
])
def test_help_lists_required_flags_first_then_the_groups(program, config_class,
                                                          required):
  out = subprocess.run([sys.executable, program, '--help'], cwd=REPO,
                       capture_output=True, text=True, check=True).stdout
  expected = {'required': list(required)}
  for field in dataclasses.fields(config_class):
    if field.name not in required:
      assert field.metadata['group'], f'--{field.name} has no help group'
      expected.setdefault(field.metadata['group'], []).append(field.name)
  order = ['required', *(g for g in ('data', 'model', 'schedule',
                                     'augmentation', 'output')
                            if g in expected)]
  assert list(_listed_by_heading(out).items()) == [
      (heading, expected[heading]) for heading in order]
