"""Faces (box, landmarks, id, head pose) drawn on BGR frames, each sized by
its own face; the live window's frame rate."""

import cv2

from facelandmark import drawing
from facelandmark import geometry
from facelandmark import head_pose
from facelandmark import tracking

# drawing.py's colours are RGB; these frames are BGR.
BOX_COLOUR, POINT_COLOUR = drawing.GREEN[::-1], drawing.RED[::-1]
TEXT_COLOUR = (255, 255, 255)
# Dot radius and line width per pixel of face size (sqrt of the landmark
# box's area): about 1 px and 1 px on a 100-pixel face, which keeps the 68
# dots apart (the eye corners of such a face are ~8 px apart), growing with
# the face on a large photo and shrinking below a pixel on a small one.
DOT_PER_SIZE = 1 / 100
LINE_PER_SIZE = 1 / 120
MIN_DOT = 0.5  # pixels: still visible anti-aliased


def face_scale(face):
  """The size (pixels) a face's drawing is scaled by: its landmark box's."""
  return float(tracking.box_sizes(geometry.landmark_box(face.landmarks)))


def annotate(frame, faces):
  """finder.py Faces on a copy of `frame`: each face's box, points, track id
  and head-pose axes when it has them, drawn to the face's own size."""
  canvas = frame.copy()
  for face in faces:
    size = face_scale(face)
    line = max(1, round(size * LINE_PER_SIZE))
    drawing.draw_box(canvas, face.box, BOX_COLOUR, line)
    drawing.draw_points(canvas, face.landmarks, POINT_COLOUR,
                        max(MIN_DOT, size * DOT_PER_SIZE))
    if face.pose is not None:
      head_pose.draw_axes(canvas, face.pose, thickness=line)
    if face.id is not None:
      x0, y0 = face.box[:2]
      text = max(0.4, size / 400)  # of the font's size (22 px high)
      _text(canvas, str(face.id), (x0, max(y0 - 4 * line, 22 * text)), text)
  return canvas


def with_rate(frame, fps):
  """A copy of `frame` with the frame rate in its top-left corner (for the
  live window only: saved frames are the video's own)."""
  canvas = frame.copy()
  _text(canvas, f'{fps:.1f} FPS', (8, 20), 0.5)
  return canvas


def _text(canvas, text, origin, size):
  """`text` with its baseline starting at `origin`, `size` times the font's
  own size."""
  cv2.putText(canvas, text, tuple(int(v) for v in origin),
              cv2.FONT_HERSHEY_SIMPLEX, size, TEXT_COLOUR,
              max(1, round(2 * size)), cv2.LINE_AA)
