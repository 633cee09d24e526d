"""BlazeFace against MediaPipe's own detections, recorded once as numbers.

How they were recorded: `pip install mediapipe==0.10.14` into a throwaway
virtualenv (not a dependency), `_images()` below written as PNG files, and
each read back as RGB and given to
`mp.solutions.face_detection.FaceDetection(model_selection=0 (short) or 1
(full), min_detection_confidence=0.5).process(rgb)`; its one detection's
relative box and keypoints times the image's width and height are below, to
3 decimals.

Exact cases: images already the model's input size (128 short, 192 full), or
smaller and letterboxed without resizing, so MediaPipe's input tensor is ours
pixel for pixel: we matched its boxes and keypoints to 0.001 px. Decoding
scaled by 127 instead of 128 moves them by 0.1-0.25 px there; the image pasted
one input pixel off in the letterbox, by about 1 px.

Resized cases: MediaPipe point-samples a bilinear warp where we area-average
(blazeface.input_tensor), which moved our boxes by up to 4.0% of the face
size (12 px of a 430 px face on a 1920 x 1080 frame); they check the whole
path at that tolerance.
"""

import os

import cv2
import numpy as np
import pytest

from facelandmark import blazeface

PHOTO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), 'assets', 'eileen_collins_nasa.jpg')
GREY = 128

# (image, model): (box [x0, y0, x1, y1], keypoints [6, 2]), image pixels.
EXACT = {
    ('crop_128', 'short'): (
        [37.911, 36.483, 89.468, 88.034],
        [[53.225, 50.331], [74.910, 51.498], [63.614, 63.973],
         [63.038, 74.077], [40.994, 54.060], [86.076, 56.422]]),
    ('wide_128x80', 'short'): (
        [48.969, 24.047, 79.882, 54.960],
        [[57.441, 31.774], [71.126, 32.897], [63.433, 39.395],
         [63.049, 45.807], [49.846, 34.226], [78.918, 36.709]]),
    ('tall_80x128', 'short'): (
        [24.980, 47.996, 55.954, 78.970],
        [[33.470, 55.716], [47.177, 56.902], [39.432, 63.402],
         [39.019, 69.815], [25.854, 58.100], [54.990, 60.713]]),
    ('crop_192', 'full'): (
        [53.893, 47.955, 139.408, 133.470],
        [[79.248, 77.524], [113.620, 77.195], [95.824, 98.748],
         [95.379, 113.587], [62.013, 82.710], [131.198, 83.018]]),
    ('wide_192x96', 'full'): (
        [87.210, 24.703, 128.054, 65.553],
        [[99.198, 38.693], [115.934, 38.801], [107.346, 48.903],
         [107.397, 55.486], [90.591, 41.033], [125.396, 41.781]]),
    ('tall_96x192', 'full'): (
        [27.622, 84.779, 68.731, 125.877],
        [[39.715, 98.811], [56.792, 99.479], [47.795, 109.929],
         [47.132, 116.380], [30.310, 100.749], [65.906, 102.589]]),
}
# (image, model): box [x0, y0, x1, y1], image pixels.
RESIZED = {
    ('photo', 'short'): [177.065, 82.915, 273.068, 178.918],
    ('photo', 'full'): [173.462, 67.516, 278.144, 172.196],
    ('hd_crop_left', 'short'): [334.653, 328.566, 767.251, 761.164],
    ('hd_crop_right', 'short'): [1175.042, 329.087, 1604.928, 758.973],
    ('hd_crop_left', 'full'): [312.029, 282.080, 776.221, 746.314],
    ('hd_crop_right', 'full'): [1164.905, 292.159, 1610.809, 738.119],
    ('hd_photo_mid', 'full'): [788.062, 145.919, 1007.215, 365.069],
}


def _images():
  """{name: RGB uint8 image}: the photo, its face crop at each model's input
  size, letterboxed without resizing, and on 1920 x 1080 frames."""
  photo = cv2.cvtColor(cv2.imread(PHOTO), cv2.COLOR_BGR2RGB)  # 512 x 512
  crop = photo[0:256, 97:353]  # The face, about 37% of the crop's side.

  def placed(height, width, image, side, x, y):
    canvas = np.full((height, width, 3), GREY, np.uint8)
    canvas[y:y + side, x:x + side] = cv2.resize(
        image, (side, side), interpolation=cv2.INTER_AREA)
    return canvas

  return {
      'photo': photo,
      'crop_128': placed(128, 128, crop, 128, 0, 0),
      'crop_192': placed(192, 192, crop, 192, 0, 0),
      'wide_128x80': placed(80, 128, crop, 80, 24, 0),
      'tall_80x128': placed(128, 80, crop, 80, 0, 24),
      'wide_192x96': placed(96, 192, crop, 96, 60, 0),
      'tall_96x192': placed(192, 96, crop, 96, 0, 60),
      'hd_crop_left': placed(1080, 1920, crop, 1080, 0, 0),
      'hd_crop_right': placed(1080, 1920, crop, 1080, 840, 0),
      'hd_photo_mid': placed(1080, 1920, photo, 1080, 420, 0),
  }


@pytest.fixture(scope='module')
def images():
  return _images()


@pytest.fixture(scope='module')
def models():
  return {name: blazeface.BlazeFace(name) for name in blazeface.MODELS}


@pytest.mark.parametrize('name, model', sorted(EXACT))
def test_mediapipes_own_input_gives_its_boxes_and_keypoints(images, models,
                                                            name, model):
  box, keypoints = EXACT[name, model]
  faces = models[model].detect(images[name])
  assert len(faces.boxes) == 1
  np.testing.assert_allclose(faces.boxes[0], box, atol=0.02)
  np.testing.assert_allclose(faces.keypoints[0], keypoints, atol=0.02)


@pytest.mark.parametrize('name, model', sorted(RESIZED))
def test_resized_images_give_mediapipes_boxes_within_resampling(
    images, models, name, model):
  box = np.array(RESIZED[name, model])
  faces = models[model].detect(images[name])
  assert len(faces.boxes) == 1
  size = np.sqrt(np.prod(box[2:] - box[:2]))
  assert np.abs(faces.boxes[0] - box).max() < 0.05 * size
