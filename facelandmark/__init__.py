"""facelandmark: the 68 iBUG 300-W face landmarks on TF Lite, no TensorFlow.

  from facelandmark import FaceFinder
  faces = FaceFinder.load().find('photo.jpg')     # [Face], left to right
  faces[0].box, faces[0].landmarks                # [x0, y0, x1, y1], [68, 2]

  from facelandmark import Landmarker             # your own detector's boxes
  points = Landmarker.load().predict(rgb_image, boxes)

The command: `facelandmark --source=photo.jpg --json=faces.json --headless`
(command.py). Training, evaluation and export live beside this package in
the source tree (pipeline/, model/, ...; pip install "facelandmark[train]").
"""

from facelandmark.finder import Face
from facelandmark.finder import FaceFinder
from facelandmark.landmarker import Landmarker

__version__ = '0.2.0'
__all__ = ['Face', 'FaceFinder', 'Landmarker']
