"""torchvision's ImageNet MobileNetV2 checkpoint as a Keras no-top weights file.

The checkpoint (e.g. `mobilenet_v2-b0353104.pth`, torchvision's width-1.0
state dict) is read without PyTorch, from its legacy (non-zip) `torch.save`
stream, by an unpickler that knows only the few names a state dict uses. Its
tensors are mapped onto `keras.applications.MobileNetV2(include_top=False)`'s
layers and written in the legacy Keras `.h5` weights layout that Keras
publishes its own ImageNet files in, so the result goes wherever those go:
`MobileNetV2(weights=FILE)`, the trainer's `--init_weights=FILE`.

The two nets differ in ways fine-tuning absorbs: torchvision pads stride-2
convolutions symmetrically (Keras pads bottom/right only) and expects inputs
normalised with ImageNet's mean and std (the landmark net feeds [-1, 1]).
Their BatchNorm epsilons (torch 1e-5, Keras 1e-3) differ too, which is not
minor: gamma is rescaled so that inference normalises exactly as torch does.
"""

import collections
import importlib.metadata
import io
import math
import os
import pickle
import struct
import tempfile
import zipfile

import h5py
import numpy as np

# torch.save's legacy stream: this magic number, then this protocol version.
_MAGIC = 0x1950a86a20f9469cfc6c
_PROTOCOL = 1001
_STORAGE_DTYPES = {
    'FloatStorage': np.dtype('<f4'),
    'DoubleStorage': np.dtype('<f8'),
    'HalfStorage': np.dtype('<f2'),
    'LongStorage': np.dtype('<i8'),
    'IntStorage': np.dtype('<i4'),
}
# What a malformed stream can make pickle raise: all mean "not a checkpoint".
_PARSE_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError,
                 KeyError, IndexError, AttributeError, OverflowError,
                 UnicodeDecodeError, struct.error)

_Storage = collections.namedtuple('_Storage', 'key dtype numel offset')
_Tensor = collections.namedtuple('_Tensor', 'storage offset size stride')


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """Stands in for torch._utils._rebuild_tensor_v2: data comes later."""
  return _Tensor(storage, offset, tuple(size), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
  """Unpickles a state dict and nothing else: no other global is reachable."""

  def __init__(self, stream):
    super().__init__(stream)
    self.storages = {}  # key -> _Storage of the whole (root) storage

  def find_class(self, module, name):
    if (module, name) == ('collections', 'OrderedDict'):
      return collections.OrderedDict
    if (module, name) == ('torch._utils', '_rebuild_tensor_v2'):
      return _rebuild_tensor
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _STORAGE_DTYPES[name]  # a dtype: calling it from a pickle fails
    raise pickle.UnpicklingError(
        f'it refers to {module}.{name}, which a state dict never does '
        '(refused, nothing was run)')

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) in (5, 6)
            and pid[0] == 'storage' and isinstance(pid[1], np.dtype)):
      raise pickle.UnpicklingError(f'unexpected persistent id {pid!r:.80}')
    _, dtype, key, _, numel, *view = pid
    root = self.storages.setdefault(key, _Storage(key, dtype, numel, 0))
    if view and view[0] is not None:  # (view key, offset, size) into the root
      return root._replace(offset=view[0][1])
    return root


def _check_header(unpickler):
  if unpickler.load() != _MAGIC:
    raise ValueError('no torch.save magic number')
  if unpickler.load() != _PROTOCOL:
    raise ValueError(f'not protocol version {_PROTOCOL}')
  info = unpickler.load()
  if not (isinstance(info, dict) and info.get('little_endian')):
    raise ValueError('not saved little-endian')


def _read_storages(data, pos, keys, storages):
  """{key: 1-D array}: each storage is an int64 count, then the raw bytes."""
  if sorted(keys) != sorted(storages):
    raise ValueError('its list of storages is not the one its tensors use')
  arrays = {}
  for key in keys:
    dtype, numel = storages[key].dtype, storages[key].numel
    if pos + 8 > len(data):
      raise ValueError(f'truncated before storage {key!r}')
    (count,) = struct.unpack_from('<q', data, pos)
    pos += 8
    if count < 0 or count != numel:
      raise ValueError(f'storage {key!r} holds {count} elements, its tensors '
                       f'say {numel}')
    if pos + count * dtype.itemsize > len(data):
      raise ValueError(f'truncated in storage {key!r} ({count} elements)')
    arrays[key] = np.frombuffer(data, dtype, count, pos)
    pos += count * dtype.itemsize
  return arrays


def _tensor_array(name, tensor, arrays, budget):
  """The tensor's elements, copied out of its storage by offset and stride.

  Every number here comes from the file: before anything is allocated, the
  tensor must lie inside its storage, hold no more elements than it and fit
  in `budget` (bytes of storage not yet copied out), so a few hundred hostile
  bytes (e.g. a stride-0 30000x30000 tensor) cannot ask for gigabytes.
  """
  flat = arrays[tensor.storage.key]
  offset = tensor.storage.offset + tensor.offset
  numbers = (offset,) + tensor.size + tensor.stride
  if not all(isinstance(n, int) and n >= 0 for n in numbers):
    raise ValueError(f'{name}: offset, sizes and strides must be '
                     f'non-negative integers, got {offset}, {tensor.size}, '
                     f'{tensor.stride}')
  if len(tensor.size) != len(tensor.stride) or len(tensor.size) > 8:
    raise ValueError(f'{name}: {len(tensor.size)} sizes and '
                     f'{len(tensor.stride)} strides (at most 8 dimensions)')
  elements = math.prod(tensor.size)
  if elements > flat.size or elements * flat.itemsize > budget:
    raise ValueError(f'{name}: {tensor.size} is {elements:,} elements, more '
                     f'than its storage ({flat.size:,}) or the storage bytes '
                     f'not yet copied ({budget:,}) hold')
  if elements == 0:
    return np.zeros(tensor.size, flat.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride))
  if last >= flat.size:
    raise ValueError(f'{name} reaches outside its storage (element {last} of '
                     f'{flat.size})')
  strides = [s * flat.itemsize for s in tensor.stride]
  return np.lib.stride_tricks.as_strided(flat[offset:], tensor.size,
                                         strides).copy()


def _parse(data):
  stream = io.BytesIO(data)
  unpickler = _StateDictUnpickler(stream)
  _check_header(unpickler)
  state = unpickler.load()
  keys = unpickler.load()
  if not (isinstance(state, dict) and state and
          all(isinstance(v, _Tensor) for v in state.values())):
    raise ValueError('its object is not a state dict of tensors')
  arrays = _read_storages(data, stream.tell(), keys, unpickler.storages)
  # Tensors may share a storage, but a state dict's copies never outweigh
  # the storage bytes read: thousands of tensors over one storage would.
  budget = sum(a.nbytes for a in arrays.values())
  tensors = {}
  for name, tensor in state.items():
    tensors[name] = _tensor_array(name, tensor, arrays, budget)
    budget -= tensors[name].nbytes
  return tensors


def read_legacy_checkpoint(path):
  """{tensor name: numpy array} from a legacy (non-zip) torch.save file."""
  if zipfile.is_zipfile(path):
    raise ValueError(
        f'{path}: a zip-format torch checkpoint (torch >= 1.6); only the '
        'legacy format is read: re-save it with torch.save(state_dict, f, '
        '_use_new_zipfile_serialization=False)')
  with open(path, 'rb') as f:
    data = f.read()
  try:
    return _parse(data)
  except EOFError as e:
    raise ValueError(f'{path}: not a legacy PyTorch checkpoint: truncated '
                     f'({e})') from e
  except _PARSE_ERRORS as e:
    raise ValueError(f'{path}: not a legacy PyTorch checkpoint: {e}') from e


# MobileNetV2's inverted residual stages: (expansion, channels at width 1.0,
# blocks). Strides do not shape weights.
_STAGES = ((1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3),
           (6, 160, 3), (6, 320, 1))
_BN_TENSORS = (('gamma', 'weight'), ('beta', 'bias'),
               ('moving_mean', 'running_mean'),
               ('moving_variance', 'running_var'))
# Added to BatchNorm's variance: torch.nn.BatchNorm2d's default, Keras'
# MobileNetV2's.
_TORCH_BN_EPSILON = 1e-5
_KERAS_BN_EPSILON = 1e-3
# In the checkpoint but not in a no-top backbone.
_OPTIONAL = ('classifier.1.weight', 'classifier.1.bias')

# One weighted layer: its Keras name, its tensor in the checkpoint (a prefix
# for BatchNorm) and kind; `shape`: the checkpoint's (OIHW, or (C,) for BN).
Layer = collections.namedtuple('Layer', 'keras torch kind shape')


def _make_divisible(value, divisor=8):
  """Keras' (and torchvision's) channel rounding: never 10% below `value`."""
  rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn(keras_conv, keras_bn, torch_conv, torch_bn, shape,
             kind='conv'):
  return [Layer(keras_conv, f'{torch_conv}.weight', kind, shape),
          Layer(keras_bn, torch_bn, 'bn', shape[:1])]


def _inverted_residual(block, channels, expansion, out):
  """Keras block `block` = torchvision features.{block + 1}."""
  torch = f'features.{block + 1}.conv'
  hidden = expansion * channels
  if block == 0:  # no expansion: torchvision's indices shift down by one
    return (_conv_bn('expanded_conv_depthwise', 'expanded_conv_depthwise_BN',
                     f'{torch}.0.0', f'{torch}.0.1', (hidden, 1, 3, 3),
                     'depthwise') +
            _conv_bn('expanded_conv_project', 'expanded_conv_project_BN',
                     f'{torch}.1', f'{torch}.2', (out, hidden, 1, 1)))
  keras = f'block_{block}'
  return (_conv_bn(f'{keras}_expand', f'{keras}_expand_BN', f'{torch}.0.0',
                   f'{torch}.0.1', (hidden, channels, 1, 1)) +
          _conv_bn(f'{keras}_depthwise', f'{keras}_depthwise_BN',
                   f'{torch}.1.0', f'{torch}.1.1', (hidden, 1, 3, 3),
                   'depthwise') +
          _conv_bn(f'{keras}_project', f'{keras}_project_BN', f'{torch}.2',
                   f'{torch}.3', (out, hidden, 1, 1)))


def backbone_layers(alpha=1.0):
  """[Layer] of the no-top MobileNetV2 at width `alpha`, in Keras' order."""
  channels = _make_divisible(32 * alpha)
  layers = _conv_bn('Conv1', 'bn_Conv1', 'features.0.0', 'features.0.1',
                    (channels, 3, 3, 3))
  block = 0
  for expansion, width, repeats in _STAGES:
    out = _make_divisible(int(width * alpha))  # Keras truncates first
    for _ in range(repeats):
      layers += _inverted_residual(block, channels, expansion, out)
      channels, block = out, block + 1
  last = _make_divisible(1280 * alpha) if alpha > 1.0 else 1280
  layers += _conv_bn('Conv_1', 'Conv_1_bn', f'features.{block + 1}.0',
                     f'features.{block + 1}.1', (last, channels, 1, 1))
  return layers


def _layer_tensors(layer):
  """[(Keras weight name, checkpoint tensor name)] of one layer."""
  if layer.kind == 'bn':
    return [(keras, f'{layer.torch}.{torch}') for keras, torch in _BN_TENSORS]
  return [('kernel' if layer.kind == 'conv' else 'depthwise_kernel',
           layer.torch)]


def _to_keras(array, kind):
  """OIHW -> HWIO; depthwise (C, 1, H, W) -> (H, W, C, 1)."""
  array = array.astype(np.float32)
  if kind == 'conv':
    return array.transpose(2, 3, 1, 0)
  if kind == 'depthwise':
    return array.transpose(2, 3, 0, 1)
  return array


def _match_epsilon(bn):
  """`bn` with gamma rescaled so Keras' epsilon normalises as torch's does.

  Copied as they are, the many near-constant channels come out up to
  sqrt(1e-3 / 1e-5) = 10 times weaker: on a photo, the ImageNet classifier
  fell to chance (pooled features' cosine to torch's 0.50; 0.93 rescaled).
  """
  variance = bn['moving_variance']
  gamma = bn['gamma'] * np.sqrt(variance + _KERAS_BN_EPSILON) / np.sqrt(
      variance + _TORCH_BN_EPSILON)
  return dict(bn, gamma=gamma.astype(np.float32))


def _check_names(tensors, layers, source):
  """Raises ValueError if a tensor is missing or not MobileNetV2's."""
  wanted = {name for layer in layers for _, name in _layer_tensors(layer)}
  allowed = wanted | set(_OPTIONAL) | {
      f'{layer.torch}.num_batches_tracked' for layer in layers
      if layer.kind == 'bn'}
  missing = sorted(wanted - set(tensors))
  extra = sorted(set(tensors) - allowed)
  for names, what in ((missing, 'missing'), (extra, 'unexpected')):
    if names:
      raise ValueError(f'{source}: not a torchvision MobileNetV2 state dict: '
                       f'{len(names)} {what} tensor(s), e.g. '
                       f'{", ".join(names[:3])}')


def keras_layers(tensors, alpha=1.0, source='checkpoint'):
  """[(Keras layer name, [(weight name, array)])] from checkpoint tensors.

  Raises ValueError naming `source` if a tensor is missing, unexpected or
  shaped for another width.
  """
  layers = backbone_layers(alpha)
  _check_names(tensors, layers, source)
  converted = []
  for layer in layers:
    weights = {}
    for keras, torch in _layer_tensors(layer):
      shape = tensors[torch].shape
      if shape != layer.shape:
        raise ValueError(f'{source}: {torch} has shape {shape}, expected '
                         f'{layer.shape}: not a width-{alpha} MobileNetV2 '
                         '(--alpha)')
      weights[keras] = _to_keras(tensors[torch], layer.kind)
    if layer.kind == 'bn':
      weights = _match_epsilon(weights)
    converted.append((layer.keras, list(weights.items())))
  return converted


def write_keras_h5(layers, output):
  """Writes `keras_layers`' result as a legacy Keras weights file, atomically.

  The layout of Keras' published `..._no_top.h5` files: `layer_names` in
  model order, one group per layer with its `weight_names`; Keras loads it
  by order (or by name with `by_name=True`).
  """
  folder = os.path.dirname(os.path.abspath(output))
  os.makedirs(folder, exist_ok=True)
  fd, temp = tempfile.mkstemp(dir=folder, suffix='.h5.tmp')
  os.close(fd)
  os.chmod(temp, 0o644)  # mkstemp's 0600 would survive the rename
  try:
    with h5py.File(temp, 'w') as f:
      f.attrs['layer_names'] = np.array([name.encode() for name, _ in layers])
      f.attrs['backend'] = b'tensorflow'
      f.attrs['keras_version'] = importlib.metadata.version('keras').encode()
      for name, weights in layers:
        group = f.create_group(name)
        group.attrs['weight_names'] = np.array(
            [f'{name}/{weight}:0'.encode() for weight, _ in weights])
        for weight, array in weights:
          group.create_dataset(f'{name}/{weight}:0', data=array)
    with open(temp, 'rb') as f:
      os.fsync(f.fileno())
    os.replace(temp, output)
  finally:
    if os.path.exists(temp):
      os.remove(temp)


def _check_output(output):
  # Keras picks its reader by suffix: `.weights.h5` means its newer format.
  if not output.endswith('.h5') or output.endswith('.weights.h5'):
    raise ValueError(f'--output must end in .h5 (not .weights.h5, which Keras '
                     f'reads as another format), got {output!r}')


def convert(checkpoint, output, alpha=1.0, log=print):
  """Converts a torchvision MobileNetV2 checkpoint; returns the layer count."""
  _check_output(output)
  layers = keras_layers(read_legacy_checkpoint(checkpoint), alpha, checkpoint)
  write_keras_h5(layers, output)
  count = sum(array.size for _, weights in layers for _, array in weights)
  log(f'Wrote {output}: {len(layers)} layers, {count:,} values of a '
      f'width-{alpha} MobileNetV2 (no top) from {checkpoint}. Use it as '
      f'--init_weights={output} (with --alpha={alpha}).')
  return len(layers)
