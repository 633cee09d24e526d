"""Face boxes, landmarks and the frame rate drawn on BGR frames."""

import cv2

from pipeline import drawing

# pipeline/drawing.py's colours are RGB; these frames are BGR.
BOX_COLOUR, POINT_COLOUR = drawing.GREEN[::-1], drawing.RED[::-1]
TEXT_COLOUR = (255, 255, 255)


def annotate(frame, boxes, landmarks, fps=None):
  """Boxes, landmarks and the frame rate (unless None) on a copy of `frame`."""
  canvas = frame.copy()
  radius = max(1.0, min(frame.shape[:2]) / 240)
  for box, points in zip(boxes, landmarks):
    drawing.draw_box(canvas, box, BOX_COLOUR)
    drawing.draw_points(canvas, points, POINT_COLOUR, radius)
  if fps is not None:
    cv2.putText(canvas, f'{fps:.1f} FPS', (8, 20), cv2.FONT_HERSHEY_SIMPLEX,
                0.5, TEXT_COLOUR, 1, cv2.LINE_AA)
  return canvas
