"""Live landmarks: camera, video or photo in; annotated frames and JSON out.

  python webcam.py                                    # camera 0, in a window
  python webcam.py --source=talk.mp4 --output=annotated.mp4 \\
      --json=landmarks.json --headless
  python webcam.py --source=photo.jpg --output=annotated.jpg --headless

Faces are found by OpenCV's Haar cascade, or --detector=full_frame takes each
whole frame as the face box; --refine (on) runs the landmarker twice per face,
--smoothing applies a One Euro filter across frames (live/webcam_lib.py).
"""

from cli import config_flags
from live import webcam_lib


def main(argv):
  del argv
  webcam_lib.run(config_flags.config_from_flags(webcam_lib.WebcamConfig))


if __name__ == '__main__':
  config_flags.define_flags(webcam_lib.WebcamConfig)
  config_flags.run(main, 'webcam')
