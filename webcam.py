"""Live landmarks: camera, video, photo or folder in; annotated frames and
JSON out.

  python webcam.py                                    # camera 0, in a window
  python webcam.py --source=talk.mp4 --output=annotated.mp4 \\
      --json=landmarks.json --headless --smoothing --pose
  python webcam.py --source=photo.jpg --output=annotated.jpg --headless
  python webcam.py --source=photos/ --output=annotated/ --json=faces.json \\
      --headless

Faces are found by BlazeFace (--detector); on video and camera each face is
followed from its last landmarks with an id, the detector running every
--detect_every frames; --smoothing applies a One Euro filter per face, --pose
adds head pose (live/webcam_lib.py).
"""

from cli import config_flags
from live import webcam_lib


def main(argv):
  del argv
  webcam_lib.run(config_flags.config_from_flags(webcam_lib.WebcamConfig))


if __name__ == '__main__':
  config_flags.define_flags(webcam_lib.WebcamConfig)
  config_flags.run(main, 'webcam')
