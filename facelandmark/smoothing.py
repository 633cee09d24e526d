"""Landmark jitter removed across frames without lag; one filter per face,
started afresh when the face's shape jumps (a cut, or another face taking
its place).

A face's points are its centre (their mean) plus its shape (the points less
the centre), filtered apart (FaceFilter). The centre follows a
constant-velocity (alpha-beta) filter: a face drifting at any steady speed
is followed without lag while its noise is averaged, and a jump beyond
GATE times the centre's recent noise is taken at once. The shape, whose
noise is most of the jitter, goes through a One Euro filter (Casiez et al.,
CHI 2012): a low-pass whose cutoff rises with speed. A One Euro filter on
the points themselves cannot do both: a drifting face raises its cutoff and
lets the noise through (bench/bench_tracking.py sweeps it).
"""

import dataclasses
import math

import numpy as np

from facelandmark import geometry

# The defaults, for video and camera alike (both run at 25-30 frames/s),
# chosen on bench/bench_tracking.py's clips (README: Video, camera and photo
# defaults): jitter 0.19% of the eye distance still, 0.20% drifting (raw
# 1.1%), 90% of 2 and 8 px steps on the next frame, 1.6 frames behind as a
# pan starts. A centre gain of 0.1 smooths more but falls 15% of the eye
# distance behind a starting pan, 0.4 lets more noise through; a shape beta
# of 0.5 smooths slightly more, 2 keeps expressions (not in the clips) moving.
MIN_CUTOFF = 0.3   # Hz, a still shape
BETA = 2.0         # Hz of cutoff per face size/s of shape change
D_CUTOFF = 3.0     # Hz, the speed estimate's own low-pass
CENTRE_GAIN = 0.3  # alpha; beta = alpha^2 / (2 - alpha), critically damped
GATE = 4.0         # a centre residual over GATE x its RMS is a jump: taken
NOISE_MEMORY = 0.9  # the residual's mean square, an exponential average
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


class CentreFilter:
  """An alpha-beta (constant-velocity) filter of a face's centre [2], with
  a gate: a residual over `gate` times its running RMS is a jump, taken
  as it is (velocity zeroed)."""

  def __init__(self, gain=CENTRE_GAIN, gate=GATE):
    self.gain, self.gate = gain, gate
    self._h = gain**2 / (2 - gain)
    self._state = None  # (time, centre, velocity, residual mean square)

  def __call__(self, centre, t):
    centre = np.asarray(centre, np.float64)
    if self._state is None:
      self._state = (t, centre, np.zeros_like(centre), None)
      return centre
    t0, previous, velocity, noise = self._state
    dt = max(t - t0, 1e-6)
    predicted = previous + velocity * dt
    residual = centre - predicted
    square = float(np.sum(residual**2))
    if noise is not None and square > self.gate**2 * noise:
      self._state = (t, centre, np.zeros_like(centre), noise)
      return centre
    estimate = predicted + self.gain * residual
    velocity = velocity + self._h * residual / dt
    noise = square if noise is None else (
        NOISE_MEMORY * noise + (1 - NOISE_MEMORY) * square)
    self._state = (t, estimate, velocity, noise)
    return estimate


class FaceFilter:
  """One face's [68, 2] points: CentreFilter on their mean, a One Euro
  filter on the rest (its speed per `scale`, the face's size)."""

  def __init__(self, min_cutoff=MIN_CUTOFF, beta=BETA, d_cutoff=D_CUTOFF,
               scale=1.0):
    self.centre = CentreFilter()
    self.shape = OneEuroFilter(min_cutoff, beta, d_cutoff, scale)

  def __call__(self, points, t):
    points = np.asarray(points, np.float64)
    centre = points.mean(axis=0)
    return self.centre(centre, t) + self.shape(points - centre, t)


class FaceSmoother:
  """A FaceFilter per face id (tracking.py's tracks).

  Called with each frame's faces (anything with `id` and `landmarks`, such
  as finder.py's Face) and the frame's time in seconds: a new id gets a new
  filter, the filter of an id missing from a frame is dropped, and a face
  whose shape jumps (SHAPE_JUMP: another face where it was) starts a new
  one, so a filter never blends two faces.

  Attributes:
    filters: id -> FaceFilter.
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
    return FaceFilter(self.min_cutoff, self.beta, self.d_cutoff,
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
