"""The whole path on whole photos: detector, boxes, landmarks, as users run it.

Each annotated face is matched to one detection: the detection whose predicted
landmarks' tight box overlaps the face's true landmark box by IoU >=
MATCH_IOU (one to one, best pairs first). A face without one is missed: it
counts in the failure rate and the CED as a failure (error inf), and not in
the NME of found faces. A detection matching no annotated face is unmatched,
not necessarily false: 300-W leaves some faces of a photo unannotated.
"""

import dataclasses

import cv2
import numpy as np

from facelandmark import detectors
from model import metrics
from facelandmark import geometry

MATCH_IOU = 0.5


@dataclasses.dataclass
class PhotoResults:
  """Per annotated face, in sample order."""
  nme: np.ndarray        # [N], inf where missed
  found: np.ndarray      # [N] bool
  subsets: list
  sources: list
  photos: list           # per photo: source, faces, found, detections,
                         # unmatched (detections matching no annotated face)


def landmark_boxes(landmarks):
  return np.array([geometry.landmark_box(p) for p in landmarks]).reshape(-1, 4)


def photo_results(landmarker, detect, samples, refine=False,
                  normalization='outer_eye', flip=False):
  """Runs `detect` (BGR -> detectors.Detections) and the landmarker on every
  sample's whole image; scores every annotated face."""
  errors, found, subsets, names, photos = [], [], [], [], []
  for sample in samples:
    boxes = detect(cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR)).boxes
    predicted = landmarker.predict(sample.image, boxes, refine=refine,
                                   flip=flip)
    matches = detectors.match(landmark_boxes(predicted),
                              landmark_boxes(sample.landmarks), MATCH_IOU)
    hit = matches >= 0
    face_errors = np.full(len(matches), np.inf)
    if hit.any():
      face_errors[hit] = metrics.nme(predicted[matches[hit]],
                                     sample.landmarks[hit],
                                     normalization).numpy()
    errors.extend(face_errors)
    found.extend(hit)
    subsets += [sample.subset] * len(matches)
    names += [sample.source] * len(matches)
    photos.append({'source': sample.source, 'faces': len(matches),
                   'found': int(hit.sum()), 'detections': len(boxes),
                   'unmatched': len(boxes) - int(hit.sum())})
  if not errors:
    raise ValueError('no faces to evaluate')
  return PhotoResults(np.array(errors), np.array(found), subsets, names,
                      photos)


def unmatched_line(photos):
  """One line: how many detections matched no annotated face, and where."""
  unmatched = [p for p in photos if p['unmatched']]
  total = sum(p['unmatched'] for p in photos)
  detections = sum(p['detections'] for p in photos)
  where = ', '.join(f'{p["source"]} ({p["unmatched"]})' for p in unmatched[:5])
  more = f' and {len(unmatched) - 5} more photos' if len(unmatched) > 5 else ''
  return (f'Unmatched detections: {total} of {detections} on {len(photos)} '
          'photos match no annotated face (300-W leaves some faces '
          'unannotated: not necessarily false)'
          f'{": " + where if where else ""}{more}.')
