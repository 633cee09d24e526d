"""Live landmarks: camera, video, photo or folder in; annotated frames and
JSON out. The installed `facelandmark` command, run from the checkout.

  python webcam.py                                    # camera 0, in a window
  python webcam.py --source=talk.mp4 --output=annotated.mp4 \\
      --json=landmarks.json --headless --smoothing --pose
  python webcam.py --source=photo.jpg --output=annotated.jpg --headless
  python webcam.py --source=photos/ --output=annotated/ --json=faces.json \\
      --headless

Faces are found by BlazeFace (--detector); on video and camera each face is
followed from its last landmarks with an id, the detector running every
--detect_every frames; --smoothing applies a One Euro filter per face, --pose
adds head pose (facelandmark/command.py).
"""

from facelandmark import command


def main():
  command.main(program='webcam')


if __name__ == '__main__':
  main()
