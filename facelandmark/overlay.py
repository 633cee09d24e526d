"""Faces (box, landmarks, id, head pose) and the frame rate drawn on BGR
frames."""

import cv2

from facelandmark import head_pose
from facelandmark import drawing

# drawing.py's colours are RGB; these frames are BGR.
BOX_COLOUR, POINT_COLOUR = drawing.GREEN[::-1], drawing.RED[::-1]
TEXT_COLOUR = (255, 255, 255)


def annotate(frame, faces, fps=None):
  """finder.py Faces and the frame rate (unless None) on a copy of
  `frame`: each face's box, points, track id and head-pose axes when it has
  them."""
  canvas = frame.copy()
  # Sized to the frame: a 6000-pixel photo is seen shrunk to a screen.
  scale = max(1.0, min(frame.shape[:2]) / 240)
  for face in faces:
    drawing.draw_box(canvas, face.box, BOX_COLOUR)
    drawing.draw_points(canvas, face.landmarks, POINT_COLOUR, scale)
    if face.pose is not None:
      head_pose.draw_axes(canvas, face.pose, thickness=round(scale))
    if face.id is not None:
      x0, y0 = face.box[:2]
      _text(canvas, str(face.id), (x0, max(y0 - scale, 8 * scale)), scale / 4)
  if fps is not None:
    _text(canvas, f'{fps:.1f} FPS', (8, 20), 0.5)
  return canvas


def _text(canvas, text, origin, size):
  """`text` with its baseline starting at `origin`, `size` times the font's
  own size."""
  cv2.putText(canvas, text, tuple(int(v) for v in origin),
              cv2.FONT_HERSHEY_SIMPLEX, size, TEXT_COLOUR,
              max(1, round(2 * size)), cv2.LINE_AA)
