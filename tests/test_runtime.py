"""The installed runtime, `facelandmark`: no TensorFlow, no clash with a
user's own modules, the API people expect, threads, the JSON it writes."""

import concurrent.futures
import glob
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

import facelandmark
from facelandmark import FaceFinder
from facelandmark import geometry
from facelandmark import landmarker as runtime
from facelandmark import results
from facelandmark import tflite
from test_layout import imported_modules

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTO = os.path.join(REPO, 'assets', 'eileen_collins_nasa.jpg')
PACKAGE = os.path.join(REPO, 'facelandmark')
# Top-level names of the training side, TensorFlow and its kin.
FORBIDDEN = {'tensorflow', 'keras', 'tensorboard', 'h5py', 'matplotlib',
             'pipeline', 'model', 'training', 'evaluation', 'exporting', 'cli',
             'live', 'bench', 'tests'}
# Run in a child: make `tensorflow` and `keras` impossible to import, as on
# a machine that never installed them.
NO_TENSORFLOW = '''
import sys
class _NoTensorFlow:
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in ('tensorflow', 'keras'):
      raise ImportError(f'{name} is not installed (test)')
sys.meta_path.insert(0, _NoTensorFlow())
'''


@pytest.fixture(scope='module')
def finder():
  return FaceFinder.load()


@pytest.fixture
def user_folder(tmp_path):
  """A user's project: its own model.py, pipeline.py and cli.py, which fail
  loudly if anything imports them, and a copy of the bundled photo."""
  for name in ('model', 'pipeline', 'cli'):
    (tmp_path / f'{name}.py').write_text(
        f'raise RuntimeError("the user\'s own {name}.py was imported")\n')
  (tmp_path / 'photo.jpg').write_bytes(open(PHOTO, 'rb').read())
  return tmp_path


def _python(code, cwd, *args):
  """Runs `python -c NO_TENSORFLOW + code` (or `python *args`) in `cwd`."""
  command = ([sys.executable, *args] if args
             else [sys.executable, '-c', NO_TENSORFLOW + code])
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  return subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                        env=env, timeout=120, check=False)


def test_the_package_imports_no_tensorflow_and_no_training_package():
  found = {os.path.relpath(path, REPO): set(imported_modules(path)) & FORBIDDEN
           for path in glob.glob(os.path.join(PACKAGE, '*.py'))}
  # Only the TF Lite fallback where LiteRT is missing, inside a function.
  found['facelandmark/tflite.py'] -= {'tensorflow'}
  assert not {path: names for path, names in found.items() if names}


def test_find_from_a_users_folder_without_tensorflow(user_folder):
  result = _python('''
from facelandmark import FaceFinder
faces = FaceFinder.load().find('photo.jpg')
assert 'tensorflow' not in sys.modules
print(len(faces), faces[0].landmarks.shape)
''', user_folder)
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == ['1', '(68,', '2)']


def test_the_command_from_a_users_folder_writes_68_points_quietly(
    user_folder):
  result = _python(
      None, user_folder, '-c', NO_TENSORFLOW +
      'from facelandmark import command; sys.argv[0] = "facelandmark"; '
      'command.main()', '--source=photo.jpg', '--json=out.json', '--headless')
  assert result.returncode == 0, result.stderr
  (frame,) = json.load(open(user_folder / 'out.json'))['frames']
  (face,) = frame['faces']
  assert np.array(face['landmarks']).shape == (68, 2)
  # No TF Lite or TensorFlow log lines: only tqdm-free, plain stderr.
  assert not result.stderr.strip(), result.stderr
  assert 'LiteRT' in result.stdout


def test_python_m_facelandmark_is_the_command(user_folder):
  result = _python(None, user_folder, '-m', 'facelandmark', '--help')
  assert '--source' in result.stdout and '--json' in result.stdout


def test_tflite_runs_through_tensorflow_lite_without_litert(user_folder):
  result = _python(None, user_folder, '-c', '''
import sys
class _NoLiteRT:
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] == 'ai_edge_litert':
      raise ImportError('not installed (test)')
sys.meta_path.insert(0, _NoLiteRT())
from facelandmark import FaceFinder, tflite
faces = FaceFinder.load().find('photo.jpg')
print(tflite.runtime()[1].split()[0], len(faces))
''')
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == ['tensorflow.lite', '1']


def test_the_runtime_is_litert_when_installed():
  assert tflite.runtime()[1].startswith('LiteRT ')


# The API.


def test_find_takes_a_path_an_array_and_a_pil_image(finder):
  bgr = cv2.imread(PHOTO)
  by_path = finder.find(PHOTO)
  assert len(by_path) == 1
  for other in (finder.find(bgr, bgr=True),
                finder.find(np.ascontiguousarray(bgr[..., ::-1])),
                finder.find(Image.open(PHOTO))):
    (face,) = other
    np.testing.assert_allclose(face.landmarks, by_path[0].landmarks,
                               atol=1.0)
  from pathlib import Path  # pylint: disable=import-outside-toplevel
  assert len(finder.find(Path(PHOTO))) == 1


def test_find_names_a_missing_or_unreadable_file(finder, tmp_path):
  missing = str(tmp_path / 'nope.jpg')
  with pytest.raises(FileNotFoundError, match=f'{missing}: no such image'):
    finder.find(missing)
  broken = tmp_path / 'broken.jpg'
  broken.write_bytes(b'not a jpeg')
  with pytest.raises(ValueError, match=f'{broken}: OpenCV cannot read'):
    finder.find(str(broken))
  with pytest.raises(ValueError, match='bgr=True is for arrays'):
    finder.find(PHOTO, bgr=True)


def test_find_all_yields_each_image_of_a_folder_or_a_list(finder, tmp_path):
  (tmp_path / 'sub').mkdir()
  bgr = cv2.imread(PHOTO)
  cv2.imwrite(str(tmp_path / 'b.png'), bgr)
  cv2.imwrite(str(tmp_path / 'sub' / 'a.jpg'), np.zeros((64, 64, 3), np.uint8))
  found = list(finder.find_all(str(tmp_path)))
  assert [name for name, _ in found] == ['b.png', 'sub/a.jpg']
  assert [len(faces) for _, faces in found] == [1, 0]
  listed = list(finder.find_all([PHOTO, bgr[..., ::-1]]))
  assert listed[0][0] == PHOTO and [len(f) for _, f in listed] == [1, 1]
  with pytest.raises(FileNotFoundError, match='gone.jpg'):
    list(finder.find_all([str(tmp_path / 'gone.jpg')]))
  with pytest.raises(NotADirectoryError, match='is not a folder'):
    list(finder.find_all(PHOTO))


def test_the_top_level_names():
  assert facelandmark.FaceFinder is FaceFinder
  assert facelandmark.Landmarker is runtime.Landmarker
  assert {'Face', 'FaceFinder', 'Landmarker'} <= set(facelandmark.__all__)


# Threads.


def test_one_finder_from_four_threads_gives_what_one_thread_gives(finder):
  bgr = cv2.imread(PHOTO)
  # Different images, so that a shared interpreter would mix them up.
  images = [cv2.resize(bgr, None, fx=scale, fy=scale)
            for scale in (1.0, 0.8, 0.6, 0.5)] * 4
  images += [np.ascontiguousarray(image[:, ::-1]) for image in images]
  alone = [finder.find(image, bgr=True) for image in images]
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    together = list(pool.map(lambda image: finder.find(image, bgr=True),
                             images))
  for one, other in zip(alone, together):
    assert len(one) == len(other) == 1
    np.testing.assert_array_equal(one[0].landmarks, other[0].landmarks)
    np.testing.assert_array_equal(one[0].box, other[0].box)


# The JSON.


def test_the_legend_names_every_point_and_mirrors_left_and_right():
  assert [row['index'] for row in results.LEGEND] == list(range(68))
  names = [row['name'] for row in results.LEGEND]
  assert len(set(names)) == 68
  assert names[36] == 'left_eye_outer_corner' and names[30] == 'nose_tip'
  assert {row['group'] for row in results.LEGEND} >= {'jaw', 'left_eye',
                                                      'right_eye'}
  # The flip that swaps the face's sides swaps the names' sides.
  for k, mirrored in enumerate(geometry.MIRROR_PERMUTATION):
    swapped = names[k].replace('left', '?').replace('right', 'left').replace(
        '?', 'right')
    if 'left' in names[k] or 'right' in names[k]:
      assert names[mirrored] == swapped, (k, names[k], names[mirrored])
  # The legend's left eye is on the image's left in the shipped model's
  # points, as the conventions say.
  (face,) = FaceFinder.load().find(PHOTO)
  assert face.landmarks[36:42, 0].mean() < face.landmarks[42:48, 0].mean()
  assert "subject's own right eye" in results.CONVENTIONS['left_right']


def test_one_json_shape_for_photo_and_folder(tmp_path):
  folder = tmp_path / 'photos'
  folder.mkdir()
  cv2.imwrite(str(folder / 'a.jpg'), cv2.imread(PHOTO))
  documents = []
  for source in (PHOTO, str(folder)):
    out = tmp_path / 'out.json'
    result = subprocess.run(
        [sys.executable, '-m', 'facelandmark', f'--source={source}',
         f'--json={out}', '--headless'], cwd=tmp_path, capture_output=True,
        text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    documents.append(json.load(open(out)))
  photo, folder_doc = documents
  assert list(photo) == list(folder_doc) == [
      'format', 'format_version', 'conventions', 'legend', 'settings',
      'frames', 'skipped']
  assert photo['format_version'] == results.FORMAT_VERSION
  assert photo['conventions']['box'].startswith('[x0, y0, x1, y1]')
  assert len(photo['legend']) == 68
  height, width = cv2.imread(PHOTO).shape[:2]
  for document, image in ((photo, PHOTO), (folder_doc, 'a.jpg')):
    (frame,) = document['frames']
    assert list(frame) == ['frame', 'time', 'image', 'width', 'height',
                           'faces']
    assert (frame['image'], frame['width'], frame['height']) == (
        image, width, height)
