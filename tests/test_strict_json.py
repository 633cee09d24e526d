"""Every JSON file the training and evaluation side writes is strict JSON.

Python's json module writes and reads NaN and Infinity, which are not JSON:
jq and JavaScript reject them. The parser here rejects them too.
"""

import json
import os

import numpy as np
import pytest

from evaluation import evaluate_lib
from facelandmark import detectors
from training import workdir as workdir_lib


def _no_constants(name):
  raise ValueError(f'{name} is not JSON')


def strict_load(path):
  with open(path, encoding='utf-8') as f:
    return json.load(f, parse_constant=_no_constants)


def _json_files(*roots):
  return sorted(os.path.join(folder, name) for root in roots
                for folder, _, names in os.walk(root) for name in names
                if name.endswith('.json'))


def _finds_nothing(*_):
  return lambda _: detectors.Detections(np.zeros((0, 4)), np.zeros(0))


def test_every_json_written_parses_strictly(tiny_export, tmp_path,
                                            monkeypatch):
  # Photo mode where no face is found: a group's NME has no number.
  monkeypatch.setattr(detectors, 'make_detector', _finds_nothing)
  said = []
  evaluate_lib.evaluate(evaluate_lib.EvalConfig(
      data_dir=tiny_export['raw'], output_dir=str(tmp_path / 'photos'),
      model=tiny_export['export_dir'], detector='blazeface', split='val'),
                        log=said.append)
  evaluate_lib.evaluate(evaluate_lib.EvalConfig(
      data_dir=tiny_export['shards'], output_dir=str(tmp_path / 'shards'),
      workdir=tiny_export['workdir']), log=said.append)
  files = _json_files(tmp_path, tiny_export['shards'], tiny_export['workdir'],
                      tiny_export['export_dir'])
  names = {os.path.basename(f) for f in files}
  assert {'manifest.json', 'config.json', 'best.json', 'metadata.json',
          'report.json'} <= names
  for path in files:
    strict_load(path)  # Raises on NaN or Infinity.
  report = strict_load(tmp_path / 'photos' / 'report.json')
  assert report['groups']['all']['nme'] is None
  assert report['groups']['all']['found'] == 0
  # The table says so too, without a number.
  assert said[0].splitlines()[1].split()[3] == '-'


def test_a_number_json_cannot_hold_is_refused_naming_the_file(tmp_path):
  path = str(tmp_path / 'best.json')
  with pytest.raises(ValueError, match='best.json: not written: .*NaN'):
    workdir_lib.write_json(path, {'nme': float('nan')})
  assert not os.listdir(tmp_path)
