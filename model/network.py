"""The landmark network: MobileNetV2 cut after block 8, plus a regression head.

Input: float32 images [B, S, S, 3] in [0, 1]. Output: float32 [B, 68, 2],
landmarks in the input view normalised to [0, 1] (corner coordinates / S).
"""

import os
import socket

import keras

from model import pip
from facelandmark import geometry

CUT_LAYER = 'block_8_add'  # 14x14x64 at 224 px input.
# Input sizes Keras publishes ImageNet weights for; others reuse the 224 file,
# which is fine for a headless, fully convolutional cut.
_IMAGENET_ROWS = (96, 128, 160, 192, 224)


def imagenet_weights_path(alpha, input_size):
  """Where Keras caches the no-top MobileNetV2 ImageNet weights it would fetch."""
  rows = input_size if input_size in _IMAGENET_ROWS else 224
  name = (f'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_'
          f'{rows}_no_top.h5')
  keras_home = os.environ.get('KERAS_HOME', os.path.expanduser('~/.keras'))
  return os.path.join(keras_home, 'models', name)


# Where Keras fetches its ImageNet weights from, and how long to wait for it.
IMAGENET_HOST = ('storage.googleapis.com', 443)
CONNECT_TIMEOUT = 3.0
RANDOM = 'none'  # --init_weights=none: random initialisation, on purpose.


def _reachable(address, timeout):
  try:
    socket.create_connection(address, timeout=timeout).close()
    return True
  except OSError:
    return False


def resolve_init_weights(alpha, input_size, weights_file=None, log=print):
  """The backbone weights to load: a file, 'imagenet' or None (random).

  A file given is used (an error if missing); 'none' means random. Otherwise
  the ImageNet file in the Keras cache, else 'imagenet' (Keras downloads it)
  when its host answers within CONNECT_TIMEOUT, else random weights with a
  line saying so: an offline machine fails fast instead of hanging.
  """
  if weights_file == RANDOM:
    log('Backbone: random initialisation (--init_weights=none).')
    return None
  if weights_file:
    if not os.path.isfile(weights_file):
      raise FileNotFoundError(f'--init_weights: no such file {weights_file!r}')
    log(f'Backbone: ImageNet weights from {weights_file}.')
    return weights_file
  cached = imagenet_weights_path(alpha, input_size)
  if os.path.isfile(cached):
    log(f'Backbone: ImageNet weights from the Keras cache, {cached}.')
    return cached
  if _reachable(IMAGENET_HOST, CONNECT_TIMEOUT):
    log(f'Backbone: ImageNet weights, downloaded by Keras to {cached}.')
    return 'imagenet'
  log(f'Backbone: random initialisation: no ImageNet weights at {cached}, '
      f'{IMAGENET_HOST[0]} unreachable and no --init_weights file (offline: '
      'convert them with `python -m model.convert_imagenet`, BUILD.md).')
  return None


def _conv_bn_relu(x, filters, name):
  x = keras.layers.Conv2D(filters, 3, strides=2, padding='same',
                          use_bias=False, name=f'{name}_conv')(x)
  x = keras.layers.BatchNormalization(name=f'{name}_bn')(x)
  return keras.layers.ReLU(6.0, name=f'{name}_relu')(x)


def _conv_head(features, width):
  """Two stride-2 convolutions, then one covering what is left: 136 values."""
  x = _conv_bn_relu(features, width, 'head1')
  x = _conv_bn_relu(x, width, 'head2')
  h, w = x.shape[1], x.shape[2]
  x = keras.layers.Conv2D(2 * geometry.NUM_LANDMARKS, (h, w), padding='valid',
                          bias_initializer=keras.initializers.Constant(0.5),
                          name='head3_conv')(x)
  return keras.layers.Flatten(name='head_flatten')(x)


def _dense_head(features, width):
  """One stride-2 convolution, then two dense layers: about the conv head's size."""
  x = _conv_bn_relu(features, width, 'head1')
  x = keras.layers.Flatten(name='head_flatten')(x)
  x = keras.layers.Dense(width, activation='relu', name='head2_dense')(x)
  return keras.layers.Dense(
      2 * geometry.NUM_LANDMARKS,
      bias_initializer=keras.initializers.Constant(0.5), name='head3_dense')(x)


class SoftArgmax(keras.layers.Layer):
  """Heatmaps [B, H, W, K] -> [B, 2K]: each map's expected (x, y) under its
  spatial softmax, normalised to [0, 1] (cell j's centre at (j + 0.5) / W).

  Differentiable, so the heatmap head trains on the same coordinate loss as
  the others (integral regression, Sun et al., ECCV 2018).
  """

  def call(self, heatmaps):
    h, w, k = heatmaps.shape[1:]
    logits = keras.ops.reshape(keras.ops.transpose(heatmaps, (0, 3, 1, 2)),
                               (-1, k, h * w))
    weights = keras.ops.softmax(logits, axis=-1)
    xs = (keras.ops.arange(w, dtype='float32') + 0.5) / w
    ys = (keras.ops.arange(h, dtype='float32') + 0.5) / h
    x = keras.ops.sum(weights * keras.ops.tile(xs, (h,)), axis=-1)
    y = keras.ops.sum(weights * keras.ops.repeat(ys, w), axis=-1)
    return keras.ops.reshape(keras.ops.stack([x, y], axis=-1), (-1, 2 * k))


def _heatmap_head(features, width):
  """The stride-16 map upsampled to stride 8, one heatmap per landmark, and
  each map's soft-argmax: points sit where the features are, not in a dense
  layer's weights. A point outside the view cannot be expressed (views have
  the face well inside: --view_scale)."""
  x = keras.layers.UpSampling2D(2, interpolation='bilinear',
                                name='head1_upsample')(features)
  x = keras.layers.Conv2D(width, 3, padding='same', use_bias=False,
                          name='head1_conv')(x)
  x = keras.layers.BatchNormalization(name='head1_bn')(x)
  x = keras.layers.ReLU(6.0, name='head1_relu')(x)
  # float32 heatmaps even under mixed precision: the softmax needs the range.
  x = keras.layers.Conv2D(geometry.NUM_LANDMARKS, 1, dtype='float32',
                          name='head2_heatmaps')(x)
  return SoftArgmax(dtype='float32', name='head_soft_argmax')(x)


# The PIPNet head's maps: what its training loss (model/pip.py) reads.
PIP_MAPS = 'head2_pip_maps'


def _pip_head(features, width):
  """Pixel-in-pixel regression on the stride-16 map (model/pip.py): cell
  scores and in-cell offsets of each landmark and its neighbours, decoded
  in-graph to coordinates."""
  x = keras.layers.Conv2D(width, 3, padding='same', use_bias=False,
                          name='head1_conv')(features)
  x = keras.layers.BatchNormalization(name='head1_bn')(x)
  x = keras.layers.ReLU(6.0, name='head1_relu')(x)
  # PIPNet's init: near-zero maps, so no cell or offset is favoured at first.
  maps = keras.layers.Conv2D(
      pip.num_channels(), 1, dtype='float32',
      kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
      name=PIP_MAPS)(x)
  return pip.PIPDecode(dtype='float32', name='head_pip_decode')(maps)


_HEAD_BUILDERS = {'conv': _conv_head, 'dense': _dense_head,
                  'heatmap': _heatmap_head, 'pip': _pip_head}
# Heads trained on their own maps rather than on the coordinates.
MAP_HEADS = {'pip': PIP_MAPS}
HEADS = tuple(_HEAD_BUILDERS)


def training_outputs(model, head):
  """The model the loss sees in training: `model` itself, or for a head in
  MAP_HEADS the same layers ending at its maps (shared variables)."""
  if head not in MAP_HEADS:
    return model
  return keras.Model(model.input, model.get_layer(MAP_HEADS[head]).output)


def set_bn_momentum(model, momentum):
  """Keras builds MobileNetV2's BatchNorm with momentum 0.999: its moving
  statistics lag thousands of steps behind a net trained from scratch."""
  for layer in model._flatten_layers(include_self=False):  # pylint: disable=protected-access
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.momentum = momentum


def build_landmark_net(input_size=224, alpha=1.0, head='conv', head_width=128,
                       bn_momentum=0.99, init_weights=None):
  """The prototype's network. `init_weights`: a backbone weights file or None."""
  if head not in HEADS:
    raise ValueError(f'--head must be one of {HEADS}, got {head!r}')
  if input_size < 32 or input_size % 16:
    raise ValueError(f'--input_size must be a multiple of 16 and >= 32, got '
                     f'{input_size}')
  backbone = keras.applications.MobileNetV2(
      input_shape=(input_size, input_size, 3), alpha=alpha,
      include_top=False, weights=init_weights)
  trunk = keras.Model(backbone.input, backbone.get_layer(CUT_LAYER).output,
                      name='mobilenetv2_block8')
  inputs = keras.Input((input_size, input_size, 3), name='image')
  # MobileNetV2 expects [-1, 1].
  x = keras.layers.Rescaling(2.0, offset=-1.0, name='to_unit_range')(inputs)
  features = trunk(x)
  flat = _HEAD_BUILDERS[head](features, head_width)
  # float32 output even under mixed precision: coordinates need the mantissa.
  flat = keras.layers.Activation('linear', dtype='float32', name='coords')(flat)
  outputs = keras.layers.Reshape((geometry.NUM_LANDMARKS, 2), dtype='float32',
                                 name='landmarks')(flat)
  model = keras.Model(inputs, outputs, name='landmark_net')
  set_bn_momentum(model, bn_momentum)
  return model
