"""The `facelandmark` command (and webcam.py): camera, video, photo or
folder of photos in; annotated frames and JSON out.

  facelandmark --source=photo.jpg --json=faces.json --headless
  python -m facelandmark --source=talk.mp4 --output=out.mp4 --pose --headless

`run(WebcamConfig(...))` is the work; `main()` the entry point. Flags,
source, outputs (never the source or each other), detector, window and
model are checked before the first frame; at the end each output is written
whatever happened to the other, and both are reported. Ctrl-C, SIGTERM and
SIGHUP end the loop alike, keeping what was done. Every source goes through
one loop over media.Source's (index, time, name, frame); each frame's JSON
record is streamed out as it comes (media.JsonOutput).

Photos (one, or each of a folder's) are independent: detector (by default
the crowd detector, detectors.for_source), then landmarks (finder.py).
Video and camera frames are followed (tracking.py): each face keeps an id,
its box comes from its last landmarks, and the detector runs every
`detect_every` frames or when a track looks lost; `smoothing` applies a One
Euro filter per face id (smoothing.py). The JSON is results.py's.
"""

import contextlib
import dataclasses
import math
import os
import signal
import threading
import time
from typing import Optional

import tqdm

from facelandmark import config_flags
from facelandmark.config_flags import option
from facelandmark import detectors
from facelandmark import finder as finder_lib
from facelandmark import media
from facelandmark import overlay
from facelandmark import results
from facelandmark import tflite
from facelandmark import smoothing as smoothing_lib
from facelandmark import tracking
from facelandmark.errors import WebcamError
from facelandmark import landmarker as landmarker_lib


@dataclasses.dataclass
class WebcamConfig:
  source: str = option('0', 'Camera index, video file, image, or a folder: '
                       'every image in it and its subfolders, in the order '
                       'of their relative paths.')
  model: str = option(landmarker_lib.SHIPPED_MODEL, 'A .tflite file with '
                      "export.py's metadata.json beside it, or an export "
                      'folder (its fastest TF Lite file that scores like the '
                      'SavedModel). Default: the shipped model.')
  output: Optional[str] = option(None, 'Annotated image (.jpg, .png) or video '
                                 '(.mp4, .avi); for a folder --source, a '
                                 'folder (created if its parent exists) '
                                 'given the same relative paths.')
  json: Optional[str] = option(None, 'Faces of every frame or image, as '
                               'JSON.')
  headless: bool = option(False, 'No window (servers, '
                          'opencv-python-headless).')
  detector: str = option(detectors.DEFAULT_DETECTOR, 'auto: '
                         f'{detectors.PHOTO_DETECTOR} for photos and folders, '
                         f'{detectors.VIDEO_DETECTOR} for video and camera; '
                         "blazeface: MediaPipe's short-range BlazeFace "
                         '(webcams, portraits); blazeface_full: its '
                         'full-range model (small faces); blazeface_both: '
                         "both, merged (crowds and portraits); haar: OpenCV's "
                         'cascade; full_frame: each frame is one face box.',
                         detectors.DETECTORS)
  refine: bool = option(False, "Rerun the landmarker on its landmarks' box "
                        'until the box settles.')
  pose: bool = option(False, 'Head pose (yaw, pitch, roll) of every face, in '
                      'the JSON and drawn as axes.')
  track: bool = option(True, 'Video and camera: follow each face from its '
                       'last landmarks, with an id; the detector only finds '
                       'faces (see --detect_every). Off: detect every frame.')
  detect_every: int = option(10, 'Tracking: run the detector every this many '
                             'frames (and whenever a face looks lost).')
  smoothing: bool = option(True, "Video and camera: each face's points "
                           'filtered across frames (its centre at constant '
                           'velocity, its shape by a One Euro filter; '
                           'restarted when the face changes).')
  min_cutoff: float = option(smoothing_lib.MIN_CUTOFF, 'Smoothing: cutoff '
                             '(Hz) of a still shape; lower is smoother; above '
                             '0.')
  beta: float = option(smoothing_lib.BETA, 'Smoothing: shape cutoff rise '
                       '(Hz) per face size per second of change; higher lags '
                       'less; 0 or more.')
  num_threads: Optional[int] = option(None, 'TF Lite interpreter threads (1 '
                                      'or more; default: its own choice).')
  max_frames: Optional[int] = option(None, 'Stop after this many frames or '
                                     'images (1 or more).')


FOLLOWED = ('video', 'camera')  # Source kinds whose frames are one scene.


class FrameRate:
  """Frames per second: `fps` smoothed (an exponential average of per-frame
  rates, drawn live) and `mean` over every frame after the first."""

  def __init__(self):
    self.fps = self.mean = self._first = None
    self._tick = time.perf_counter()
    self._later = 0  # frames after the first

  def tick(self):
    """Call once per frame; returns the smoothed rate."""
    now = time.perf_counter()
    rate = 1.0 / max(now - self._tick, 1e-9)
    self.fps = rate if self.fps is None else 0.9 * self.fps + 0.1 * rate
    # The first frame's time is the model's start-up: left out of the mean.
    if self._first is None:
      self._first = now
    else:
      self._later += 1
      self.mean = self._later / max(now - self._first, 1e-9)
    self._tick = now
    return self.fps


def check_config(config):
  """Raises for a flag that cannot work, before anything opens: no
  --model (FileNotFoundError), a number out of its range, a camera index
  OpenCV cannot take, or outputs naming the source or each other
  (WebcamError)."""
  if not os.path.exists(config.model):
    raise FileNotFoundError(
        f'--model={config.model} does not exist: pass a .tflite file export.py '
        'wrote (with its metadata.json) or its folder, or leave --model out '
        'for the shipped model')
  at_least_one = [('detect_every', config.detect_every),
                  ('num_threads', config.num_threads),
                  ('max_frames', config.max_frames)]
  for name, value in at_least_one:
    if value is not None and value < 1:
      raise WebcamError(f'--{name} must be at least 1, got {value}')
  # A cutoff of 0 Hz freezes the points; a negative one sends them away.
  if not (math.isfinite(config.min_cutoff) and config.min_cutoff > 0):
    raise WebcamError(f'--min_cutoff must be a number above 0 (Hz), got '
                      f'{config.min_cutoff}')
  if not (math.isfinite(config.beta) and config.beta >= 0):
    raise WebcamError(f'--beta must be a number at least 0, got '
                      f'{config.beta}')
  media.source_kind(config.source)
  media.check_distinct(config.source, config.output, config.json)


# Signals that end a run the way Ctrl-C (SIGINT) does: `timeout` and `docker
# stop` send SIGTERM, a closed terminal SIGHUP (absent on Windows).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ('SIGTERM', 'SIGHUP')
                     if hasattr(signal, name))


class Stopped(KeyboardInterrupt):
  """A stop signal, raised where the frame loop is, as SIGINT raises
  KeyboardInterrupt."""


@contextlib.contextmanager
def stop_signals_interrupt():
  """While inside, STOP_SIGNALS raise Stopped, so the loop keeps what it
  did; their handlers are restored on leaving. Python runs signal handlers
  in the main thread only, so elsewhere this does nothing."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def interrupt(number, frame):
    del frame
    raise Stopped(signal.Signals(number).name)

  previous = {number: signal.signal(number, interrupt)
              for number in STOP_SIGNALS}
  try:
    yield
  finally:
    for number, handler in previous.items():
      signal.signal(number, handler)


def settings(config, finder, kind):
  """The JSON's 'settings': what produced it."""
  return {'source': config.source, 'source_kind': kind, 'model': config.model,
          'model_file': finder.model_file,
          'detector': detectors.for_source(config.detector, kind),
          'refine': config.refine, 'pose': config.pose,
          'track': config.track and kind in FOLLOWED,
          'detect_every': config.detect_every,
          'smoothing': config.smoothing and kind in FOLLOWED}


def detector_note(detector, source):
  """What the detector may miss, said before the first frame."""
  share = detectors.MIN_FACE_FOUND.get(detector)
  if share is None:
    return f'Detector: {detector}.'
  where = ("a frame's" if source.kind in FOLLOWED else "a photo's")
  pixels = (f', {share * min(source.size):.0f} px here,' if source.size
            else '')
  smaller = (f' (--detector={detectors.PHOTO_DETECTOR} finds faces down to '
             f'{detectors.MIN_FACE_FOUND[detectors.PHOTO_DETECTOR]:.0%})'
             if share > detectors.MIN_FACE_FOUND[detectors.PHOTO_DETECTOR]
             else '')
  return (f'Detector: {detector}; faces smaller than about {share:.0%} of '
          f'{where} shorter side{pixels} may be missed{smaller}.')


def faces_function(config, finder, kind):
  """(BGR frame, time) -> [finder.Face] for a source of `kind`: each photo on
  its own; video and camera frames tracked (ids; smoothed if asked)."""
  if kind not in FOLLOWED:
    return lambda frame, t: finder.find(frame, bgr=True, pose=config.pose)
  tracker = tracking.Tracker(finder, config.detect_every, follow=config.track)
  smoother = (smoothing_lib.FaceSmoother(config.min_cutoff, config.beta)
              if config.smoothing else None)

  def faces(frame, t):
    found = tracker.step(frame)
    if smoother:
      found = smoother(found, t)
    return (finder_lib.with_poses(found, frame.shape[:2]) if config.pose
            else found)

  return faces


@dataclasses.dataclass
class Tally:
  """What the frame loop did: frames (or images), those with faces, the
  mean frame rate (video and camera), why it was interrupted."""
  frames: int = 0
  with_faces: int = 0
  fps: Optional[float] = None
  interrupted: Optional[str] = None


def _loop(config, source, faces_of, output, json_output, window, log):
  """The frame loop: a Tally. Each frame's record goes to `json_output` as
  it comes (none kept here). The rate is None for photos: it would time the
  model's start-up, or unrelated images."""
  meter = FrameRate() if source.kind in FOLLOWED else None
  tally = Tally()
  # Closed on leaving: a progress bar inside ends with it.
  frames = iter(source)
  try:
    for index, t, name, frame in frames:
      faces = faces_of(frame, t)
      image = source.name if source.kind == 'image' else name
      if json_output:
        json_output.write(results.frame_record(
            index, t if source.kind in FOLLOWED else None, image,
            frame.shape[:2], faces))
      tally.frames += 1
      tally.with_faces += bool(faces)
      fps = meter.tick() if meter else None
      if output or window:
        annotated = overlay.annotate(frame, faces)
      if output:
        output.write(annotated, name)
      # The rate is the live window's: saved frames stay the video's.
      if window and not window.show(
          annotated if fps is None else overlay.with_rate(annotated, fps)):
        break
      if config.max_frames and tally.frames >= config.max_frames:
        break
  except KeyboardInterrupt as e:
    tally.interrupted = str(e) if isinstance(e, Stopped) else 'SIGINT'
    log(f'Interrupted ({tally.interrupted}): writing what was processed.')
  finally:
    frames.close()
  tally.fps = meter.mean if meter else None
  return tally


def _save(config, output, json_output, skipped):
  """Writes the image output and the JSON, each whatever the other did:
  (paths written, error messages)."""
  outputs = []
  if output:
    outputs.append(('--output', config.output, output.save))
  if json_output:
    outputs.append(('--json', config.json,
                    lambda: json_output.save(results.footer(skipped))))
  written, failures = [], []
  for flag, path, save in outputs:
    try:
      save()
      written.append(path)
    except (WebcamError, OSError) as e:
      failures.append(f'{flag}={path} not written: {e}')
  return written, failures


def run(config, log=print):
  """Finds faces and landmarks frame by frame; returns a summary dict:
  'frames' (or images) processed, 'frames_with_faces', 'fps' (video and
  camera), 'skipped' (folder images not read), 'stopped' (why a video or
  camera ended early, else None)."""
  check_config(config)
  if config.headless and not (config.output or config.json):
    log('Headless without --output or --json: the results are not kept.')

  def warn(message):
    with tqdm.tqdm.external_write_mode():
      log(f'Warning: {message}')

  with media.Source(config.source, warn, progress=True) as source, (
      contextlib.nullcontext() if config.headless else media.Window()
  ) as window:
    if config.output:
      media.check_output(config.output, source)
    if config.json:
      media.check_writable(config.json, '--json')
    detector = detectors.for_source(config.detector, source.kind)
    finder = finder_lib.FaceFinder.load(config.model, detector,
                                        config.num_threads, config.refine)
    # Landmarker.load may pick a file inside a folder: name the one it used.
    log(f'Model: {finder.model_file} ({tflite.runtime()[1]})')
    log(detector_note(detector, source))
    with (media.open_output(config.output, source) if config.output
          else contextlib.nullcontext()) as output, (
              media.JsonOutput(config.json, results.header(
                  settings(config, finder, source.kind)), results.FRAMES)
              if config.json else contextlib.nullcontext()) as json_output:
      with stop_signals_interrupt():
        tally = _loop(config, source, faces_function(
            config, finder, source.kind), output, json_output, window, log)
      if source.stopped:
        warn(f'{source.stopped}; keeping the {tally.frames} frames read')
      written, failures = _save(config, output, json_output, source.skipped)
  summary = {'frames': tally.frames, 'frames_with_faces': tally.with_faces,
             'fps': None if tally.fps is None else round(tally.fps, 2),
             'skipped': len(source.skipped),
             'stopped': source.stopped or (
                 tally.interrupted and f'interrupted by {tally.interrupted}')}
  unit = 'images' if source.kind == 'folder' else 'frames'
  log(f'{summary["frames"]} {unit}, {summary["frames_with_faces"]} with faces'
      + (f', {summary["skipped"]} unreadable skipped' if source.skipped
         else '')
      + ('' if tally.fps is None else f', {summary["fps"]} FPS')
      + ''.join(f'; wrote {path}' for path in written))
  if failures:
    raise WebcamError('; '.join(failures) + ''.join(
        f'; {path} was written' for path in written))
  return summary


def main(program='facelandmark'):
  """The command: flags from WebcamConfig, then run; a user's error ends it
  with one line naming `program`."""
  config_flags.define_flags(WebcamConfig)

  def run_flags(argv):
    del argv
    # Nothing returned: absl exits with what main returns.
    run(config_flags.config_from_flags(WebcamConfig))

  config_flags.run(run_flags, program)
