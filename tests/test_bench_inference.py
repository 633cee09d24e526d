"""bench/bench_inference.py: its table rows when a detector finds nothing."""

import numpy as np

from bench import bench_inference
from evaluation import samples as samples_lib
from facelandmark import detectors


class _NoLandmarker:
  def predict(self, image, boxes, **options):
    del image, options
    return np.zeros((len(boxes), 68, 2), np.float32)


def test_a_detector_that_finds_no_face_gets_a_dash_for_nme():
  points = np.random.default_rng(0).uniform(40, 140, (68, 2))
  sample = samples_lib.Sample(np.zeros((200, 200, 3), np.uint8),
                              points[None], points[None], 'afw', 'a.jpg')
  def nothing(_):
    return detectors.Detections(np.zeros((0, 4)), np.zeros(0))
  row = bench_inference.whole_path_row('none', nothing, _NoLandmarker(),
                                       [sample], 'outer_eye')
  assert row[1:3] == ['0/1', '-']
