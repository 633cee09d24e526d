"""The network, its losses and the NME metric."""

import socket

import numpy as np
import pytest
import tensorflow as tf

from model import losses
from model import metrics
from model import network
from model import pip
from exporting import tflite as tflite_lib


def _one_error(pixels, size=100):
  """True/predicted [1, 68, 2] whose every coordinate is off by `pixels`."""
  true = np.full([1, 68, 2], 0.5, np.float32)
  return true, true + pixels / size


@pytest.mark.parametrize('pixels,expected', [
    (1.0, 4.054651081),    # 10 ln(1 + 1/2)
    (20.0, 27.917594692),  # 20 - (10 - 10 ln 6)
])
def test_wing_against_hand_values(pixels, expected):
  true, predicted = _one_error(pixels)
  value = losses.get_loss('wing', 100)(true, predicted).numpy()
  np.testing.assert_allclose(value, [expected], rtol=1e-5)


@pytest.mark.parametrize('pixels,expected', [
    (0.2, 0.468812530),  # 14 ln(1 + 0.2^2.1)
    (3.0, 30.738789206),  # A*3 - C, A = 11.1214216, C = 2.6254757
])
def test_adaptive_wing_against_hand_values(pixels, expected):
  true, predicted = _one_error(pixels)
  value = losses.get_loss('adaptive_wing', 100)(true, predicted).numpy()
  np.testing.assert_allclose(value, [expected], rtol=1e-4)


def test_wing_is_continuous_at_its_threshold():
  below = losses.wing(tf.constant([[9.9999]])).numpy()
  above = losses.wing(tf.constant([[10.0001]])).numpy()
  np.testing.assert_allclose(below, above, atol=1e-3)


def test_mse_l1_smooth_l1_values():
  true, predicted = _one_error(2.0)
  np.testing.assert_allclose(losses.get_loss('mse', 100)(true, predicted),
                             [0.0004], rtol=1e-4)
  np.testing.assert_allclose(losses.get_loss('l1', 100)(true, predicted),
                             [0.02], rtol=1e-4)
  # 2 px > beta = 1 px: linear part, 2 - 0.5.
  np.testing.assert_allclose(losses.get_loss('smooth_l1', 100)(true, predicted),
                             [1.5], rtol=1e-4)


def test_unknown_loss_names_the_flag():
  with pytest.raises(ValueError, match='--loss'):
    losses.get_loss('cosine', 100)


def _frontal_shape():
  rng = np.random.default_rng(0)
  shape = rng.uniform(0.2, 0.8, [68, 2])
  shape[36] = [0.3, 0.4]
  shape[45] = [0.7, 0.4]
  return shape


def test_nme_is_mean_error_over_outer_eye_distance():
  true = _frontal_shape()
  predicted = true + [0.03, 0.04]  # every point 0.05 off; eyes 0.4 apart
  np.testing.assert_allclose(metrics.nme(predicted, true).numpy(), 0.125,
                             rtol=1e-5)
  batch = metrics.nme(np.stack([predicted, true]), np.stack([true, true]))
  np.testing.assert_allclose(batch.numpy(), [0.125, 0.0], atol=1e-6)


def test_nme_pupil_normalisation_uses_eye_centres():
  true = _frontal_shape()
  true[36:42] = [0.3, 0.4]
  true[42:48] = [0.5, 0.4]
  predicted = true + [0.0, 0.02]
  np.testing.assert_allclose(metrics.nme(predicted, true, 'pupil').numpy(),
                             0.1, rtol=1e-5)


def test_auc_and_failure_rate():
  errors = np.array([0.01, 0.02, 0.05, 0.2])
  assert metrics.failure_rate(errors, 0.08) == 0.25
  # CED steps up by 1/4 at 0.01, 0.02, 0.05: area = (0.07+0.06+0.03)/4 / 0.08.
  assert metrics.auc(errors, 0.08) == pytest.approx(0.5, abs=2e-3)


@pytest.mark.parametrize('head', network.HEADS)
def test_network_shapes_and_bn_momentum(head):
  model = network.build_landmark_net(input_size=64, alpha=0.35, head=head,
                                     bn_momentum=0.9)
  out = model(np.random.rand(2, 64, 64, 3).astype(np.float32))
  assert out.shape == (2, 68, 2)
  if head == 'pip':  # Untrained: cell corners (offsets ~0), in the view.
    assert 0 <= float(np.min(out)) and float(np.max(out)) < 1
  else:  # Untrained output starts near the view centre (bias 0.5).
    assert abs(float(np.mean(out)) - 0.5) < 0.2
  momenta = {layer.momentum for layer in model._flatten_layers()
             if 'BatchNormalization' in type(layer).__name__}
  assert momenta == {0.9}
  assert model.get_layer('mobilenetv2_block8').output.shape[1:] == (4, 4, 24)  # 64 channels x alpha 0.35, rounded to 8


def test_soft_argmax_finds_each_peak_in_view_coordinates():
  maps = np.full([1, 8, 6, 2], -50.0, np.float32)  # H=8 rows, W=6 columns
  maps[0, 2, 5, 0] = 50.0  # row 2, column 5
  maps[0, 7, 0, 1] = 50.0
  points = network.SoftArgmax()(maps).numpy().reshape(2, 2)
  np.testing.assert_allclose(points, [[5.5 / 6, 2.5 / 8], [0.5 / 6, 7.5 / 8]],
                             atol=1e-5)
  # Equal mass on two cells: their midpoint.
  maps[0, 2, 3, 0] = 50.0
  np.testing.assert_allclose(network.SoftArgmax()(maps).numpy()[0, :2],
                             [4.5 / 6, 2.5 / 8], atol=1e-5)


def ideal_pip_maps(points, h, w):
  """The maps the PIPNet loss is zero on, for [B, 68, 2] view points."""
  k, n = 68, pip.NUM_NEIGHBOURS
  grid = points * [w, h]
  cells = np.clip(np.floor(grid), 0, [w - 1, h - 1]).astype(int)
  nb = pip.neighbours()
  maps = np.zeros([len(points), h, w, pip.num_channels()], np.float32)
  for b in range(len(points)):
    for i in range(k):
      cx, cy = cells[b, i]
      maps[b, cy, cx, i] = 1.0
      maps[b, cy, cx, k + i], maps[b, cy, cx, 2 * k + i] = grid[b, i] - [cx, cy]
      votes = grid[b, nb[i]] - [cx, cy]  # [N, 2]
      maps[b, cy, cx, 3 * k + i * n:3 * k + (i + 1) * n] = votes[:, 0]
      maps[b, cy, cx, 3 * k + k * n + i * n:3 * k + k * n + (i + 1) * n] = (
          votes[:, 1])
  return maps


def test_pip_decode_reads_the_maps_its_loss_is_zero_on():
  rng = np.random.default_rng(0)
  points = rng.uniform(0.05, 0.95, [3, 68, 2]).astype(np.float32)
  maps = ideal_pip_maps(points, 7, 5)  # 7 rows, 5 columns
  assert np.allclose(pip.loss(points, maps).numpy(), 0.0, atol=1e-6)
  np.testing.assert_allclose(
      pip.PIPDecode()(maps).numpy().reshape(3, 68, 2), points, atol=1e-5)
  # A wrong own offset of one landmark is outvoted by its neighbours: it moves
  # by 1 / (1 + votes for it) of the error, and the loss sees it.
  votes = int(np.sum(pip.neighbours() == 30))
  cy, cx = np.floor(points[0, 30, ::-1] * [7, 5]).astype(int)
  maps[0, cy, cx, 68 + 30] += 1.0  # one cell too far right
  moved = pip.PIPDecode()(maps).numpy().reshape(3, 68, 2)[0, 30, 0]
  assert moved - points[0, 30, 0] == pytest.approx(1 / 5 / (1 + votes), abs=1e-5)
  assert pip.loss(points, maps).numpy()[0] > 0.01


def test_pip_decoding_survives_float16_tflite(tmp_path):
  """On a 7-wide map (112 px views) cell 7 starts row 1: float16 TF Lite
  turns a float `/ 7` into `* (1 / 7)`, whose rounding put it in row 0."""
  decode = pip.PIPDecode()
  module = tf.Module()
  module.views = tf.function(lambda maps: {'landmarks': decode(maps)},
                             input_signature=[tf.TensorSpec(
                                 [None, 7, 7, pip.num_channels()], tf.float32)])
  tf.saved_model.save(module, str(tmp_path), signatures={'views': module.views})
  interpreter = tf.lite.Interpreter(
      model_content=tflite_lib.convert_tflite(str(tmp_path), 'float16'))
  interpreter.allocate_tensors()
  (source,), (target,) = (interpreter.get_input_details(),
                          interpreter.get_output_details())
  rng = np.random.default_rng(1)
  points = rng.uniform(0.02, 0.98, [1, 68, 2]).astype(np.float32)
  points[0, :7, 0] = 0.07  # first column, every row
  points[0, :7, 1] = (np.arange(7) + 0.5) / 7
  interpreter.set_tensor(source['index'], ideal_pip_maps(points, 7, 7))
  interpreter.invoke()
  np.testing.assert_allclose(
      interpreter.get_tensor(target['index']).reshape(68, 2), points[0],
      atol=2e-3)


def test_pip_neighbours_are_near_in_the_mean_shape():
  nb = pip.neighbours()
  assert nb.shape == (68, pip.NUM_NEIGHBOURS) and not np.any(nb == np.arange(68)[:, None])
  assert set(nb[36]) >= {37, 41}  # an eye corner's neighbours: its eyelids
  merge = pip.merge_matrix(nb)
  np.testing.assert_allclose(merge.sum(axis=0), 1.0, atol=1e-6)


def test_bad_input_size_names_the_flag():
  with pytest.raises(ValueError, match='--input_size'):
    network.build_landmark_net(input_size=100)


def test_init_weights_without_cache_says_random(tmp_path, monkeypatch):
  monkeypatch.setenv('KERAS_HOME', str(tmp_path))
  said = []
  assert network.resolve_init_weights(1.0, 112, log=said.append) is None
  assert 'random initialisation' in said[0]
  with pytest.raises(FileNotFoundError, match='--init_weights'):
    network.resolve_init_weights(1.0, 112, str(tmp_path / 'missing.h5'))


def test_init_weights_offline_fails_fast_and_none_is_random(tmp_path,
                                                            monkeypatch):
  # An address that refuses at once stands for the unreachable host (this
  # machine has no route to it either; a user's machine usually has).
  monkeypatch.setenv('KERAS_HOME', str(tmp_path))
  with socket.socket() as closed:
    closed.bind(('127.0.0.1', 0))
    address = closed.getsockname()
  monkeypatch.setattr(network, 'IMAGENET_HOST', address)
  said = []
  assert network.resolve_init_weights(1.0, 112, log=said.append) is None
  assert 'unreachable' in said[0] and 'convert_imagenet' in said[0]
  # An answering host means Keras may download.
  with socket.socket() as server:
    server.bind(('127.0.0.1', 0))
    server.listen()
    monkeypatch.setattr(network, 'IMAGENET_HOST', server.getsockname())
    assert network.resolve_init_weights(1.0, 112, log=said.append) == (
        'imagenet')
  assert network.resolve_init_weights(1.0, 112, 'none',
                                      log=said.append) is None
  assert '--init_weights=none' in said[-1]


def test_init_weights_from_keras_cache_are_loaded(tmp_path, monkeypatch):
  """A file where Keras caches ImageNet weights is found and really loaded."""
  import keras  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('KERAS_HOME', str(tmp_path))
  path = network.imagenet_weights_path(0.35, 96)
  (tmp_path / 'models').mkdir()
  donor = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35,
                                         include_top=False, weights=None)
  donor.save(path)  # the legacy .h5 layout of Keras' published files
  assert network.resolve_init_weights(0.35, 96, log=lambda _: None) == path
  model = network.build_landmark_net(input_size=96, alpha=0.35,
                                     init_weights=path)
  loaded = model.get_layer('mobilenetv2_block8').get_layer('Conv1').kernel
  np.testing.assert_array_equal(loaded.numpy(),
                                donor.get_layer('Conv1').kernel.numpy())
