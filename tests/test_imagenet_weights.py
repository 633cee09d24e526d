"""torchvision MobileNetV2 checkpoints -> Keras weights, on generated ones.

The checkpoints are written here in torch.save's legacy format by hand (no
PyTorch), named and shaped as torchvision's `mobilenet_v2(width_mult=0.35)`.
"""

import io
import os
import pickle
import re
import struct
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

from model import imagenet_weights

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALPHA = 0.35
# torchvision's channels at width 0.35: the stem, then each stage's output.
_STEM = 16
_STAGES = ((1, 8, 1), (6, 8, 2), (6, 16, 3), (6, 24, 4), (6, 32, 3),
           (6, 56, 3), (6, 112, 1))
_LAST = 1280


def _ops(value):
  """`value`'s pickle opcodes, without the protocol header, memo or STOP."""
  stream = io.BytesIO()
  pickler = pickle.Pickler(stream, protocol=2)
  pickler.fast = True
  pickler.dump(value)
  return stream.getvalue()[2:-1]


def _global(module, name):
  return pickle.GLOBAL + f'{module}\n{name}\n'.encode()


def _tensor_ops(storage_type, key, numel, offset, size, stride, view=None):
  """_rebuild_tensor_v2(persistent storage id, offset, size, stride, ...)."""
  pid = (pickle.MARK + _ops('storage') + _global('torch', storage_type) +
         _ops(key) + _ops('cpu') + _ops(numel) +
         (_ops(view) if view else pickle.NONE) + pickle.TUPLE)
  return (_global('torch._utils', '_rebuild_tensor_v2') + pickle.MARK + pid +
          pickle.BINPERSID + _ops(offset) + _ops(tuple(size)) +
          _ops(tuple(stride)) + pickle.NEWFALSE +
          _global('collections', 'OrderedDict') + pickle.EMPTY_TUPLE +
          pickle.REDUCE + pickle.TUPLE + pickle.REDUCE)


def _write_legacy(path, entries, storages):
  """torch.save's legacy stream: header, state dict, keys, storages.

  entries: {name: (key, offset, size, stride, view)}; storages: {key: 1-D}.
  """
  state = (pickle.PROTO + b'\x02' + _global('collections', 'OrderedDict') +
           pickle.EMPTY_TUPLE + pickle.REDUCE + pickle.MARK)
  for name, (key, offset, size, stride, view) in entries.items():
    kind = 'LongStorage' if storages[key].dtype == np.int64 else 'FloatStorage'
    state += _ops(name) + _tensor_ops(kind, key, storages[key].size, offset,
                                      size, stride, view)
  state += pickle.SETITEMS + pickle.STOP
  sys_info = {'protocol_version': 1001, 'little_endian': True,
              'type_sizes': {'short': 2, 'int': 4, 'long': 4}}
  with open(path, 'wb') as f:
    for header in (0x1950a86a20f9469cfc6c, 1001, sys_info):
      f.write(pickle.dumps(header, protocol=2))
    f.write(state)
    f.write(pickle.dumps(sorted(storages), protocol=2))
    for key in sorted(storages):
      f.write(struct.pack('<q', storages[key].size))
      f.write(storages[key].astype(storages[key].dtype.newbyteorder('<'))
              .tobytes())


def _write_checkpoint(path, tensors):
  """A legacy checkpoint of {name: array}, one contiguous storage each."""
  entries, storages = {}, {}
  for i, (name, array) in enumerate(tensors.items()):
    strides = [int(np.prod(array.shape[d + 1:])) for d in range(array.ndim)]
    entries[name] = (f'{i:04d}', 0, array.shape, strides, None)
    storages[f'{i:04d}'] = array.reshape(-1)
  _write_legacy(path, entries, storages)
  return path


def _torchvision_tensors(rng):
  """Random tensors as in torchvision's mobilenet_v2(0.35).state_dict()."""
  tensors = {}

  def conv(name, shape):
    tensors[f'{name}.weight'] = rng.standard_normal(shape, np.float32)

  def bn(name, channels):
    for stat in ('weight', 'bias', 'running_mean'):
      tensors[f'{name}.{stat}'] = rng.standard_normal(channels, np.float32)
    tensors[f'{name}.running_var'] = rng.uniform(1e-4, 2, channels).astype(
        np.float32)
    tensors[f'{name}.num_batches_tracked'] = np.array(7, np.int64)

  conv('features.0.0', (_STEM, 3, 3, 3))
  bn('features.0.1', _STEM)
  channels, index = _STEM, 1
  for expansion, out, repeats in _STAGES:
    for _ in range(repeats):
      hidden, block = channels * expansion, f'features.{index}.conv'
      j = 0
      if expansion != 1:
        conv(f'{block}.0.0', (hidden, channels, 1, 1))
        bn(f'{block}.0.1', hidden)
        j = 1
      conv(f'{block}.{j}.0', (hidden, 1, 3, 3))
      bn(f'{block}.{j}.1', hidden)
      conv(f'{block}.{j + 1}', (out, hidden, 1, 1))
      bn(f'{block}.{j + 2}', out)
      channels, index = out, index + 1
  conv(f'features.{index}.0', (_LAST, channels, 1, 1))
  bn(f'features.{index}.1', _LAST)
  tensors['classifier.1.weight'] = rng.standard_normal((10, _LAST), np.float32)
  tensors['classifier.1.bias'] = rng.standard_normal(10, np.float32)
  return tensors


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  tensors = _torchvision_tensors(np.random.default_rng(0))
  path = str(tmp_path_factory.mktemp('torch') / 'mobilenet_v2_0.35.pth')
  return _write_checkpoint(path, tensors), tensors


def test_converted_weights_load_into_keras_transposed(source, tmp_path):
  path, tensors = source
  output = str(tmp_path / 'no_top.h5')
  said = []
  assert imagenet_weights.convert(path, output, ALPHA, log=said.append) == 104
  assert output in said[0]
  model = keras.applications.MobileNetV2(
      alpha=ALPHA, input_shape=(64, 64, 3), include_top=False, weights=output)
  # Kernels: OIHW -> HWIO, depthwise (C, 1, H, W) -> (H, W, C, 1).
  for layer, name, axes in (
      ('Conv1', 'features.0.0.weight', (2, 3, 1, 0)),
      ('expanded_conv_depthwise', 'features.1.conv.0.0.weight', (2, 3, 0, 1)),
      ('expanded_conv_project', 'features.1.conv.1.weight', (2, 3, 1, 0)),
      ('block_5_expand', 'features.6.conv.0.0.weight', (2, 3, 1, 0)),
      ('block_5_depthwise', 'features.6.conv.1.0.weight', (2, 3, 0, 1)),
      ('block_5_project', 'features.6.conv.2.weight', (2, 3, 1, 0)),
      ('Conv_1', 'features.18.0.weight', (2, 3, 1, 0))):
    (kernel,) = model.get_layer(layer).get_weights()
    np.testing.assert_array_equal(kernel, tensors[name].transpose(axes))
  gamma, beta, mean, variance = model.get_layer('block_5_project_BN'
                                                ).get_weights()
  bn = {k: tensors[f'features.6.conv.3.{k}'] for k in (
      'weight', 'bias', 'running_mean', 'running_var')}
  np.testing.assert_array_equal(beta, bn['bias'])
  np.testing.assert_array_equal(mean, bn['running_mean'])
  np.testing.assert_array_equal(variance, bn['running_var'])
  # Inference normalises as torch does, despite Keras' epsilon 1e-3.
  np.testing.assert_allclose(gamma / np.sqrt(variance + 1e-3),
                             bn['weight'] / np.sqrt(bn['running_var'] + 1e-5),
                             rtol=1e-5)
  # Every weighted layer was set from the file.
  expected = dict(imagenet_weights.keras_layers(tensors, ALPHA))
  weighted = [layer for layer in model.layers if layer.weights]
  assert [layer.name for layer in weighted] == list(expected)
  for layer in weighted:
    for variable, (_, array) in zip(
        layer.trainable_weights + layer.non_trainable_weights,
        expected[layer.name]):
      np.testing.assert_array_equal(variable.numpy(), array)


@pytest.mark.parametrize('alpha', [0.5, 0.75, 1.0, 1.4])
def test_layer_shapes_are_keras_mobilenet_v2s(alpha):
  model = keras.applications.MobileNetV2(
      alpha=alpha, input_shape=(32, 32, 3), include_top=False, weights=None)
  kinds = {'conv': (2, 3, 1, 0), 'depthwise': (2, 3, 0, 1), 'bn': (0,)}
  wanted = [(layer.keras, tuple(np.empty(layer.shape).transpose(
      kinds[layer.kind]).shape)) for layer in
            imagenet_weights.backbone_layers(alpha)]
  assert wanted == [(layer.name, tuple(layer.weights[0].shape))
                    for layer in model.layers if layer.weights]


def test_reader_follows_offset_stride_and_storage_views(tmp_path):
  storages = {'a': np.arange(20, dtype=np.float32),
              'b': np.arange(3, dtype=np.int64)}
  entries = {'strided': ('a', 2, (3, 2), (1, 3), None),
             'view': ('a', 1, (2,), (2,), ('a_view', 10, 5)),
             'scalar': ('b', 2, (), (), None)}
  _write_legacy(tmp_path / 'x.pth', entries, storages)
  tensors = imagenet_weights.read_legacy_checkpoint(tmp_path / 'x.pth')
  np.testing.assert_array_equal(tensors['strided'],
                                [[2, 5], [3, 6], [4, 7]])
  np.testing.assert_array_equal(tensors['view'], [11, 13])
  assert tensors['scalar'].shape == () and tensors['scalar'] == 2


def _convert(checkpoint, tmp_path, alpha=ALPHA):
  return imagenet_weights.convert(str(checkpoint), str(tmp_path / 'out.h5'),
                                  alpha, log=lambda _: None)


def test_a_file_that_is_no_checkpoint_is_named(tmp_path):
  text = tmp_path / 'notes.pth'
  text.write_text('not a checkpoint\n')
  with pytest.raises(ValueError, match=r'notes\.pth: not a legacy PyTorch'):
    _convert(text, tmp_path)
  zipped = tmp_path / 'new_format.pth'
  with zipfile.ZipFile(zipped, 'w') as f:
    f.writestr('archive/data.pkl', b'')
  with pytest.raises(ValueError, match=r'new_format\.pth: a zip-format'):
    _convert(zipped, tmp_path)
  assert not os.path.exists(tmp_path / 'out.h5')


@pytest.mark.parametrize('keep', [0.002, 0.5, 0.9999])
def test_a_truncated_checkpoint_is_named(source, tmp_path, keep):
  with open(source[0], 'rb') as f:
    data = f.read()
  cut = tmp_path / 'cut.pth'
  cut.write_bytes(data[:int(len(data) * keep)])
  with pytest.raises(ValueError, match=r'cut\.pth: .*truncated'):
    _convert(cut, tmp_path)
  assert not os.path.exists(tmp_path / 'out.h5')


@pytest.mark.parametrize('change, message', [
    ('drop', r'1 missing tensor\(s\), e\.g\. features\.6\.conv\.1\.0\.weight'),
    ('add', r'1 unexpected tensor\(s\), e\.g\. features\.6\.conv\.4\.weight'),
])
def test_a_checkpoint_of_another_net_is_named(source, tmp_path, change,
                                              message):
  tensors = dict(source[1])
  if change == 'drop':
    del tensors['features.6.conv.1.0.weight']
  else:
    tensors['features.6.conv.4.weight'] = np.zeros(3, np.float32)
  path = _write_checkpoint(tmp_path / 'other.pth', tensors)
  with pytest.raises(ValueError, match=r'other\.pth: not a torchvision '
                     'MobileNetV2 state dict: ' + message):
    _convert(path, tmp_path)


def test_another_width_is_named(source, tmp_path):
  with pytest.raises(ValueError, match=(
      r'mobilenet_v2_0\.35\.pth: features\.0\.0\.weight has shape '
      r'\(16, 3, 3, 3\), expected \(32, 3, 3, 3\): not a width-1\.0 '
      r'MobileNetV2 \(--alpha\)')):
    _convert(source[0], tmp_path, alpha=1.0)


class _Exploit:

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f'touch {self.marker}',)


@pytest.mark.parametrize('where', ['header', 'state'])
def test_a_malicious_pickle_is_refused_unrun(tmp_path, where):
  marker = tmp_path / 'ran'
  path = tmp_path / 'evil.pth'
  exploit = pickle.dumps(_Exploit(marker), protocol=2)
  magic = pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2)
  version = pickle.dumps(1001, protocol=2)
  info = pickle.dumps({'little_endian': True}, protocol=2)
  path.write_bytes(exploit if where == 'header' else
                   magic + version + info + exploit)
  with pytest.raises(ValueError, match=r'evil\.pth: .*system.*refused'):
    _convert(path, tmp_path)
  assert not marker.exists()


def test_bad_output_names_the_flag_and_keeps_the_old_file(source, tmp_path):
  with pytest.raises(ValueError, match='--output'):
    imagenet_weights.convert(source[0], str(tmp_path / 'x.weights.h5'), ALPHA)
  old = tmp_path / 'out.h5'
  old.write_bytes(b'old')
  with pytest.raises(ValueError):
    _convert(source[0], tmp_path, alpha=1.0)
  assert old.read_bytes() == b'old'
  assert os.listdir(tmp_path) == ['out.h5']


def _run_cli(*args):
  return subprocess.run(
      [sys.executable, '-m', 'model.convert_imagenet', *args], cwd=REPO,
      capture_output=True, text=True, check=False)


def test_command_line_writes_the_file_or_one_line(source, tmp_path):
  output = tmp_path / 'cli.h5'
  result = _run_cli(f'--checkpoint={source[0]}', f'--output={output}',
                    f'--alpha={ALPHA}')
  assert result.returncode == 0, result.stderr
  assert f'Wrote {output}' in result.stdout and output.exists()
  result = _run_cli(f'--checkpoint={source[0]}', f'--output={output}')
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1].startswith(
      'convert_imagenet: ')
  assert 'Traceback' not in result.stderr


# Read in a child process whose address space is capped: a hostile file must
# be refused before it allocates, not by the machine running out of memory.
_CAPPED_READ = '''
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]),) * 2)
from model import imagenet_weights
try:
  imagenet_weights.read_legacy_checkpoint(sys.argv[1])
except ValueError as e:
  print(e)
else:
  print('read')
'''
_MEMORY_CAP = 1 << 30  # The reader's own imports take about 160 MB.


def _read_capped(path):
  result = subprocess.run(
      [sys.executable, '-c', _CAPPED_READ, str(path), str(_MEMORY_CAP)],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout.strip()


@pytest.mark.parametrize('entries, storage, message', [
    # Stride 0: 900 million elements (3.6 GB) over one stored float.
    ({'w': ('a', 0, (30000, 30000), (0, 0), None)}, 1,
     r'w: \(30000, 30000\) is 900,000,000 elements, more than its storage'),
    # A hundred tensors, each of the whole storage: 100x what was read.
    ({f'w{i}': ('a', 0, (1000,), (1,), None) for i in range(100)}, 1000,
     r'w\d+: \(1000,\) is 1,000 elements, more than .* the storage bytes not '
     r'yet copied \(0\)'),
    # As many elements as the storage, but strided past its end.
    ({'w': ('a', 0, (10,), (1000,), None)}, 10,
     r'w reaches outside its storage \(element 9000 of 10\)'),
    ({'w': ('a', 5, (10,), (1,), None)}, 10,
     r'w reaches outside its storage \(element 14 of 10\)'),
    ({'w': ('a', 0, (-4, -4), (1, 1), None)}, 10,
     'w: offset, sizes and strides must be non-negative integers'),
])
def test_a_hostile_checkpoint_is_refused_before_allocating(
    tmp_path, entries, storage, message):
  path = tmp_path / 'hostile.pth'
  _write_legacy(path, entries, {'a': np.zeros(storage, np.float32)})
  assert path.stat().st_size < 20_000  # Bytes, against gigabytes.
  said = _read_capped(path)
  assert re.search(f'hostile.pth: not a legacy PyTorch checkpoint: {message}',
                   said), said
  assert '\n' not in said
