"""Live landmarks: camera, video or photo in; annotated frames and JSON out.

`run(WebcamConfig(...))` is what webcam.py runs. Source, outputs, detector,
window and model are checked before the first frame; at the end each output
is written whatever happened to the other, and both are reported.

The landmarker runs twice per face by default (`refine`): Haar boxes are
framed differently from the tight landmark boxes the net was trained on, and
the second pass sees a view framed like its training views. `smoothing`
applies a One Euro filter to every point across frames.

JSON landmarks are in corner coordinates: pixel (i, j) covers [i, i+1) x
[j, j+1) (pipeline/geometry.py).
"""

import contextlib
import dataclasses
import functools
import os
import time
from typing import Optional

import cv2
import numpy as np

from cli.config_flags import option
from live import detectors
from live import media
from live import overlay
from live import smoothing as smoothing_lib
from live.errors import WebcamError
from model import landmarker as landmarker_lib

DEFAULT_MODEL = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'pretrained')


@dataclasses.dataclass
class WebcamConfig:
  source: str = option('0', 'Camera index, video file or image.')
  model: str = option(DEFAULT_MODEL, 'Export folder (SavedModel) or a .tflite '
                      'file in it.')
  output: Optional[str] = option(None, 'Annotated image (.jpg, .png) or video '
                                 '(.mp4, .avi).')
  json: Optional[str] = option(None, 'Landmarks of every frame, as JSON.')
  headless: bool = option(False, 'No window (servers, '
                          'opencv-python-headless).')
  detector: str = option('haar', "haar: OpenCV's cascade; full_frame: each "
                         'frame is one face box.', detectors.DETECTORS)
  refine: bool = option(True, "Second landmark pass on the first pass's "
                        'landmark box.')
  smoothing: bool = option(False, 'One Euro filter on the points across '
                           'frames.')
  min_cutoff: float = option(1.0, 'Smoothing: cutoff (Hz) of still points; '
                             'lower is smoother.')
  beta: float = option(0.05, 'Smoothing: cutoff rise per pixel/s of speed; '
                       'higher lags less.')
  num_threads: Optional[int] = option(None, 'TF Lite interpreter threads.')
  max_frames: Optional[int] = option(None, 'Stop after this many frames.')


COORDINATES = 'corner: pixel (i, j) covers [i, i+1) x [j, j+1)'


class FrameRate:
  """Frames per second, smoothed: an exponential average of per-frame rates."""

  def __init__(self):
    self.fps = None
    self._tick = time.perf_counter()

  def tick(self):
    """Call once per frame; returns the smoothed rate."""
    now = time.perf_counter()
    rate = 1.0 / max(now - self._tick, 1e-9)
    self.fps = rate if self.fps is None else 0.9 * self.fps + 0.1 * rate
    self._tick = now
    return self.fps


def frame_record(index, t, boxes, landmarks):
  """One frame's entry in the JSON 'frames' list."""
  return {'frame': index, 'time': round(t, 4), 'faces': [
      {'box': box.tolist(), 'landmarks': np.round(points, 3).tolist()}
      for box, points in zip(boxes, landmarks)]}


def json_document(config, records):
  return {'source': config.source, 'model': config.model,
          'detector': config.detector, 'refine': config.refine,
          'smoothing': config.smoothing, 'coordinates': COORDINATES,
          'frames': records}


def _load_landmarker(config, log):
  landmarker = landmarker_lib.Landmarker.load(config.model, config.num_threads)
  # Landmarker.load may pick a file inside a folder: name the one it used.
  if getattr(landmarker, 'source', None):
    log(f'Model: {landmarker.source}')
  return landmarker


def _track(config, frames, find_faces, landmarker, video, window, log):
  """The frame loop: (JSON frame records, frame rate). The rate is None for a
  photo: its one frame would time the model's start-up."""
  smoother = (smoothing_lib.OneEuroFilter(config.min_cutoff, config.beta)
              if config.smoothing else None)
  meter = None if frames.kind == 'image' else FrameRate()
  records = []
  try:
    for index, t, frame in frames:
      boxes = detectors.left_to_right(find_faces(frame))
      landmarks = landmarker.predict(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB),
                                     boxes, refine=config.refine)
      if smoother:
        landmarks = smoother(landmarks, t)
      records.append(frame_record(index, t, boxes, landmarks))
      fps = meter.tick() if meter else None
      if video or window:
        annotated = overlay.annotate(frame, boxes, landmarks, fps)
      if video:
        video.write(annotated)
      if window and not window.show(annotated):
        break
      if config.max_frames and len(records) >= config.max_frames:
        break
  except KeyboardInterrupt:
    log('Interrupted: writing what was processed.')
  return records, meter.fps if meter else None


def _save(config, video, records):
  """Writes the image output and the JSON, each whatever the other did:
  (paths written, error messages)."""
  outputs = []
  if video:
    outputs.append(('--output', config.output, video.save))
  if config.json:
    outputs.append(('--json', config.json, functools.partial(
        media.write_json, config.json, json_document(config, records))))
  written, failures = [], []
  for flag, path, save in outputs:
    try:
      save()
      written.append(path)
    except (WebcamError, OSError) as e:
      failures.append(f'{flag}={path} not written: {e}')
  return written, failures


def run(config, log=print):
  """Detects faces and landmarks frame by frame; returns a summary dict."""
  if not os.path.exists(config.model):
    raise FileNotFoundError(
        f'no model at {config.model}: export one with `python export.py '
        '--workdir=RUN --export_dir=DIR` and pass --model=DIR (or a .tflite '
        'file in it)')
  if config.headless and not (config.output or config.json):
    log('Headless without --output or --json: the results are not kept.')
  with media.Source(config.source) as frames, (
      contextlib.nullcontext() if config.headless else media.Window()
  ) as window:
    if config.output:
      media.check_output(config.output, frames.kind)
    if config.json:
      media.check_writable(config.json, '--json')
    find_faces = detectors.make_detector(config.detector)
    landmarker = _load_landmarker(config, log)
    with (media.Output(config.output, frames.size, frames.fps)
          if config.output else contextlib.nullcontext()) as video:
      records, fps = _track(config, frames, find_faces, landmarker, video,
                            window, log)
  written, failures = _save(config, video, records)
  summary = {'frames': len(records),
             'frames_with_faces': sum(bool(r['faces']) for r in records),
             'fps': None if fps is None else round(fps, 2)}
  log(f'{summary["frames"]} frames, {summary["frames_with_faces"]} with faces'
      + ('' if fps is None else f', {summary["fps"]} FPS')
      + ''.join(f'; wrote {path}' for path in written))
  if failures:
    raise WebcamError('; '.join(failures) + ''.join(
        f'; {path} was written' for path in written))
  return summary
