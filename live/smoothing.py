"""One Euro filter: landmark jitter removed across frames, with little lag."""

import math

import numpy as np


def _alpha(cutoff, dt):
  """Exponential smoothing factor of a first-order low-pass at `cutoff` Hz."""
  tau = 1.0 / (2 * math.pi * cutoff)
  return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
  """One Euro filter (Casiez et al., CHI 2012) for [..., 2] points.

  A low-pass whose cutoff rises with each point's speed: still points are
  smoothed hard (no jitter), moving ones lightly (little lag). Reset when the
  array's shape changes (a face appeared or left).
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
