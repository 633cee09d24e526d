"""One Euro filter: landmark jitter removed across frames, with little lag;
one per face, started afresh when the face's shape jumps (a cut, or another
face taking its place)."""

import dataclasses
import math

import numpy as np

from facelandmark import geometry

# The defaults, for video and camera alike (both run at 25-30 frames/s),
# chosen on bench/bench_tracking.py's clips: see README (Video and camera).
# Jitter 0.16% of the eye distance still and 0.29% drifting 7.5 px/s (raw:
# 0.68%), 90% of a 2 px step in 2 frames and of an 8 px step in 1 at 30
# frames/s; lower cutoffs or beta smooth more but lag 3 to 9 frames.
MIN_CUTOFF = 0.3   # Hz, still points
BETA = 20.0        # Hz of cutoff per face size/s of speed
D_CUTOFF = 3.0     # Hz, the speed estimate's own low-pass
# A face's shape (its points less their mean, over their RMS radius) moving
# by more than this RMS from one frame to the next is not the same face
# moving: the filter restarts. Frame-to-frame model noise moves it by ~0.02;
# two different people's 300-W shapes differ by 0.11 or more (99% of AFW
# pairs); a blink or a smile moves a few points, well under it.
SHAPE_JUMP = 0.06


def _alpha(cutoff, dt):
  """Exponential smoothing factor of a first-order low-pass at `cutoff` Hz."""
  tau = 1.0 / (2 * math.pi * cutoff)
  return 1.0 / (1.0 + tau / dt)


def shape(points):
  """[68, 2] points less their mean, over their RMS distance to it."""
  centred = np.asarray(points, np.float64) - np.mean(points, axis=0)
  return centred / max(np.sqrt(np.mean(np.sum(centred**2, axis=1))), 1e-9)


def shape_jump(before, after):
  """RMS distance between the shapes (`shape`) of two [68, 2] point sets."""
  return float(np.sqrt(np.mean(np.sum((shape(after) - shape(before))**2,
                                      axis=1))))


class OneEuroFilter:
  """One Euro filter (Casiez et al., CHI 2012) for [..., 2] points.

  A low-pass whose cutoff rises with each point's speed: still points are
  smoothed hard (no jitter), moving ones lightly (little lag). Speed is in
  units of `scale` per second (the face's size: the same settings then suit
  any resolution). Starts afresh when the points' shape changes.
  """

  def __init__(self, min_cutoff=MIN_CUTOFF, beta=BETA, d_cutoff=D_CUTOFF,
               scale=1.0):
    self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
    self.scale = scale
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
    speed = np.linalg.norm(velocity, axis=-1, keepdims=True) / self.scale
    a = _alpha(self.min_cutoff + self.beta * speed, dt)
    smoothed = a * points + (1 - a) * previous
    self._previous = (t, smoothed, velocity)
    return smoothed


class FaceSmoother:
  """A OneEuroFilter per face id (tracking.py's tracks).

  Called with each frame's faces (anything with `id` and `landmarks`, such
  as finder.py's Face) and the frame's time in seconds: a new id gets a new
  filter, the filter of an id missing from a frame is dropped, and a face
  whose shape jumps (SHAPE_JUMP: another face where it was) starts a new
  one, so a filter never blends two faces.

  Attributes:
    filters: id -> OneEuroFilter.
    resets: how many times a face's filter restarted on a shape jump.
  """

  def __init__(self, min_cutoff=MIN_CUTOFF, beta=BETA, d_cutoff=D_CUTOFF,
               jump=SHAPE_JUMP):
    self.min_cutoff, self.beta, self.jump = min_cutoff, beta, jump
    self.d_cutoff = d_cutoff
    self.filters = {}
    self.resets = 0
    self._raw = {}  # id -> its last unsmoothed points

  def _new_filter(self, points):
    size = float(np.sqrt(np.prod(np.diff(
        geometry.landmark_box(points).reshape(2, 2), axis=0))))
    return OneEuroFilter(self.min_cutoff, self.beta, self.d_cutoff,
                         scale=max(size, 1e-6))

  def __call__(self, faces, t):
    """`faces` with smoothed landmarks."""
    filters = {}
    for face in faces:
      previous = self._raw.get(face.id)
      if previous is not None and shape_jump(previous,
                                             face.landmarks) > self.jump:
        self.resets += 1
        previous = None
      filters[face.id] = (self.filters[face.id] if previous is not None
                          else self._new_filter(face.landmarks))
    self.filters = filters
    self._raw = {face.id: np.asarray(face.landmarks) for face in faces}
    return [dataclasses.replace(
        face, landmarks=self.filters[face.id](face.landmarks, t))
            for face in faces]
