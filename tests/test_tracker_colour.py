"""The tracker reads OpenCV's BGR frames as BGR: its landmarks are the
finder's on the RGB image (converted here by OpenCV, not by the tracker's
code), on a real face where the channel order changes the landmarks."""

import os

import cv2
import numpy as np

from facelandmark import finder as finder_lib
from facelandmark import geometry
from facelandmark import tracking

PHOTO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), 'assets', 'eileen_collins_nasa.jpg')


def test_tracked_landmarks_are_the_finders_on_the_rgb_frame():
  finder = finder_lib.FaceFinder.load()
  bgr = cv2.imread(PHOTO)
  rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
  boxes = finder.detect(bgr).boxes
  detected = finder.landmarks(rgb, boxes)  # Frame 1: on the detector's box.
  followed = finder.landmarks(rgb, geometry.landmark_box(detected[0])[None])
  # The known answer differs from the channel-swapped one by far more than
  # the tolerance below: the test can tell the orders apart.
  swapped = finder.landmarks(bgr, boxes)
  assert np.abs(swapped - detected).max() > 0.5

  tracker = tracking.Tracker(finder, detect_every=10)
  first, second = tracker.step(bgr), tracker.step(bgr)
  assert tracker.detections == 1  # The second frame followed the face.
  np.testing.assert_allclose(first[0].landmarks, detected[0], atol=1e-3)
  np.testing.assert_allclose(second[0].landmarks, followed[0], atol=1e-3)
