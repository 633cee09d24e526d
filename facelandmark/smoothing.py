"""One Euro filter: landmark jitter removed across frames, with little lag."""

import dataclasses
import math

import numpy as np


def _alpha(cutoff, dt):
  """Exponential smoothing factor of a first-order low-pass at `cutoff` Hz."""
  tau = 1.0 / (2 * math.pi * cutoff)
  return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
  """One Euro filter (Casiez et al., CHI 2012) for [..., 2] points.

  A low-pass whose cutoff rises with each point's speed: still points are
  smoothed hard (no jitter), moving ones lightly (little lag). Starts afresh
  when the points' shape changes.
  """

  def __init__(self, min_cutoff=1.0, beta=0.05, d_cutoff=1.0):
    self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
    self._previous = None  # (time, points, velocity)

  def __call__(self, points, t):
    points = np.asarray(points, np.float64)
    if self._previous is None or self._previous[1].shape != points.shape:
      self._previous = (t, points, np.zeros_like(points))
      return points
    t0, previous, previous_velocity = self._previous
    dt = max(t - t0, 1e-6)
    a = _alpha(self.d_cutoff, dt)
    velocity = a * (points - previous) / dt + (1 - a) * previous_velocity
    speed = np.linalg.norm(velocity, axis=-1, keepdims=True)
    a = _alpha(self.min_cutoff + self.beta * speed, dt)
    smoothed = a * points + (1 - a) * previous
    self._previous = (t, smoothed, velocity)
    return smoothed


class FaceSmoother:
  """A OneEuroFilter per face id (tracking.py's tracks).

  Called with each frame's faces (anything with `id` and `landmarks`, such
  as finder.py's Face): a new id gets a new filter, and the filter of an
  id missing from a frame is dropped (track ids are never reused), so each
  filter follows one face whatever the faces' order.
  """

  def __init__(self, min_cutoff=1.0, beta=0.05):
    self.min_cutoff, self.beta = min_cutoff, beta
    self.filters = {}  # id -> OneEuroFilter

  def __call__(self, faces, t):
    """`faces` with smoothed landmarks."""
    self.filters = {face.id: self.filters.get(face.id) or OneEuroFilter(
        self.min_cutoff, self.beta) for face in faces}
    return [dataclasses.replace(
        face, landmarks=self.filters[face.id](face.landmarks, t))
            for face in faces]
