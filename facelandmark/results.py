"""The command's JSON: one shape for a photo, a folder, a video or a camera,
saying what its numbers mean.

  {"format": "facelandmark", "format_version": 2,
   "conventions": {...},        # coordinates, box order, left/right, units
   "legend": [{"index": 0, "name": "jaw_left_end", "group": "jaw"}, ...],
   "settings": {...},           # source, model, detector, ...
   "frames": [{"frame": 0, "time": null, "image": "photo.jpg",
               "width": 640, "height": 480,
               "faces": [{"id"?, "box", "score", "landmarks", "pose"?}]}],
   "skipped": []}               # folder images OpenCV could not read

A frame is a photo, one image of a folder (`image`: its path relative to the
folder), or a video or camera frame (`image` null, `time` in seconds).
"""

from facelandmark import geometry

FORMAT = 'facelandmark'
# 2: conventions, legend, settings, width and height, one 'frames' list for
# every source (1 had 'images' for folders and no explanations).
FORMAT_VERSION = 2
CONVENTIONS = {
    'coordinates': 'image pixels, corner convention: pixel (i, j) covers '
                   '[i, i+1) x [j, j+1), x to the right, y down; the centre '
                   'of the top-left pixel is (0.5, 0.5)',
    'box': '[x0, y0, x1, y1]: left, top, right, bottom edges, in those '
           'coordinates',
    'landmarks': "68 [x, y] points of the iBUG 300-W markup, in the order "
                 "of 'legend' (0-based index)",
    'left_right': "left and right in the legend are the image's (a "
                  "viewer's): the 'left eye' (36-41) is the subject's own "
                  'right eye',
    'score': "the face detector's confidence in [0, 1] (1 for detectors "
             'without one)',
    'id': 'video and camera: the track id of the face, the same across '
          'frames',
    'pose': "yaw, pitch, roll in degrees (yaw > 0: the face turns toward "
            "image right, the subject's left; pitch > 0: up; roll > 0: "
            'clockwise in the image); error: RMS reprojection error in '
            'pixels; rvec: OpenCV rotation vector in radians, model to '
            'camera; tvec: the nose tip from the camera in millimetres (as '
            'right as a generic face size and a guessed focal length)',
    'time': 'seconds from the start of the video (camera: from its first '
            'frame); null for images',
}
LEGEND = [{'index': i, 'name': name, 'group': group}
          for i, (name, group) in enumerate(geometry.LEGEND)]


def frame_record(index, time, image, size, faces):
  """One frame's record: `size` is (height, width); `faces` Face objects."""
  height, width = size
  return {'frame': index, 'time': None if time is None else round(time, 4),
          'image': image, 'width': int(width), 'height': int(height),
          'faces': [face.as_dict() for face in faces]}


# The document is streamed (media.JsonOutput): the header, then the frame
# records one by one under FRAMES, then the footer.
FRAMES = 'frames'


def header(settings):
  """What comes before the frames: format, conventions, legend and
  `settings` (a dict)."""
  return {'format': FORMAT, 'format_version': FORMAT_VERSION,
          'conventions': CONVENTIONS, 'legend': LEGEND, 'settings': settings}


def footer(skipped=()):
  """What comes after the frames: the skipped files."""
  return {'skipped': list(skipped)}
