"""Reads 300-W annotations: dlib imglab XML or the original per-face .pts files.

Everything comes out as `Face` records in corner coordinates (geometry.py),
split into train and val by image, plus a `Skipped` entry, with the reason, for
every face that cannot be used. Pixels are checked later by whoever decodes the
image (`read_image`, `check_in_image`), so each image is decoded once.
"""

import dataclasses
import hashlib
import os
import re
import xml.etree.ElementTree as ET

import cv2
import numpy as np

from facelandmark import geometry

LAYOUTS = ('auto', 'xml', 'pts')
DLIB_TRAIN_XML = 'labels_ibug_300W_train.xml'
DLIB_TEST_XML = 'labels_ibug_300W_test.xml'
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
SPLITS = ('train', 'val')
# A landmark or face box corner may sit beyond the image border by at most this
# share of the image's shorter side: 300-W has a few chins just outside the
# photo; more is a bad label. Judged against the image, not the face box, which
# outliers enlarge themselves; it also bounds the crop prepare allocates to
# (crop_context * (long side + short side))^2 pixels.
MAX_OUTSIDE = 0.5


class DataError(ValueError):
  """Input that cannot be used at all: named file or folder, and why."""


@dataclasses.dataclass(frozen=True)
class Face:
  image_path: str       # absolute
  rel_path: str         # image path relative to data_dir, posix
  subset: str           # e.g. 'afw', 'helen/trainset'
  face_index: int       # position among the faces annotated on this image
  landmarks: np.ndarray  # [68, 2] float64, corner coordinates
  box: np.ndarray       # [x0, y0, x1, y1] float64, corner coordinates


@dataclasses.dataclass(frozen=True)
class Skipped:
  file: str             # relative to data_dir, posix
  face_index: int
  reason: str

  @property
  def message(self):
    return f'{self.file} (face {self.face_index}): {self.reason}'

  def as_dict(self):
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Dataset:
  data_dir: str         # absolute
  layout: str           # 'xml' or 'pts'
  split: dict           # how train and val were chosen, for the manifest
  train: list
  val: list
  skipped: list         # [Skipped], faces rejected while reading annotations
  ignored_boxes: int    # dlib boxes marked ignore='1'


def _posix_rel(path, data_dir):
  return os.path.relpath(path, data_dir).replace(os.sep, '/')


def subset_of(rel_path, data_dir):
  """Folder of the image path, lowercased; top level: the data folder's name."""
  folder = rel_path.rpartition('/')[0]
  if folder:
    return folder.lower()
  name = os.path.basename(os.path.normpath(os.path.abspath(data_dir)))
  return os.path.splitext(name)[0].lower() or 'unknown'


def is_val(rel_path, val_fraction):
  """Stable per-image coin: sha1 of the relative image path mapped to [0, 1)."""
  digest = hashlib.sha1(rel_path.encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big') / 2.0**64 < val_fraction


def landmark_problem(landmarks, box=None):
  """Why landmarks and box (default: their tight box) are unusable, or None."""
  if landmarks.shape != (geometry.NUM_LANDMARKS, 2):
    return f'{len(landmarks)} points, expected {geometry.NUM_LANDMARKS}'
  if not np.all(np.isfinite(landmarks)):
    return 'non-finite (NaN or inf) landmark coordinates'
  box = geometry.landmark_box(landmarks) if box is None else box
  if not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
    return f'zero-size or invalid face box {np.round(box, 2).tolist()}'
  return None


def check_in_image(face, height, width):
  """Why the face does not fit an image of this size, or None."""
  limit = MAX_OUTSIDE * min(height, width)
  for what, points in (('landmarks', face.landmarks),
                       ('face box', face.box.reshape(2, 2))):
    outside = np.max(np.concatenate([-points, points - [width, height]]))
    if outside > limit:
      return (f'{what} up to {outside:.0f} px outside the {width}x{height} '
              f'image (at most {limit:.0f} px allowed)')
  return None


class BadImage(Exception):
  """An image that cannot be decoded; the message says why."""


def read_image(path):
  """BGR uint8 image; raises BadImage if missing, unreadable or truncated."""
  try:
    data = np.fromfile(path, np.uint8)
  except OSError as e:
    raise BadImage(f'cannot read image: {e.strerror or e}') from e
  # Annotations are on the stored pixel grid, so EXIF rotation is not applied.
  flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
  image = cv2.imdecode(data, flags) if data.size else None
  if image is None:
    raise BadImage('cannot decode image (corrupt or not an image)')
  # OpenCV 4 decodes a truncated JPEG with a grey bottom and only a warning: a
  # complete one has its end-of-image marker after the last start-of-scan.
  raw = data.tobytes()
  if raw[:2] == b'\xff\xd8' and raw.rfind(b'\xff\xd9') < raw.rfind(b'\xff\xda'):
    raise BadImage('truncated JPEG')
  return image


# dlib imglab XML.


def _attr(element, name):
  value = element.get(name)
  if value is None:
    raise ValueError(f'<{element.tag}> without {name}=')
  return value


def _number(element, name):
  value = _attr(element, name)
  try:
    return float(value)
  except ValueError:
    raise ValueError(
        f'<{element.tag}> {name}={value!r} is not a number') from None


def _xml_box(box_el):
  """dlib box (first pixel column/row and size) to corner coordinates."""
  left, top, width, height = (_number(box_el, a)
                              for a in ('left', 'top', 'width', 'height'))
  return np.array([left, top, left + width, top + height])


def _spans(numbers):
  """Sorted integers as '00-35, 48-67'."""
  spans = []
  for n in numbers:
    if spans and spans[-1][1] == n - 1:
      spans[-1][1] = n
    else:
      spans.append([n, n])
  return ', '.join(f'{a:02d}' if a == b else f'{a:02d}-{b:02d}'
                   for a, b in spans)


def _xml_parts(box_el):
  """Landmarks by part name; ValueError unless the names are 00..67, once each.

  The name is the landmark's slot: a point under a wrong or repeated name would
  train the net on a point in the wrong place.
  """
  count = geometry.NUM_LANDMARKS
  by_name = {}
  for part in box_el.findall('part'):
    name = _attr(part, 'name')
    try:
      index = int(name)
    except ValueError:
      raise ValueError(f'non-integer part name {name!r}') from None
    if not 0 <= index < count:
      raise ValueError(f'part name {name!r} outside 00..{count - 1}')
    if index in by_name:
      raise ValueError(f'duplicate part name {name!r}')
    by_name[index] = [_number(part, 'x'), _number(part, 'y')]
  missing = sorted(set(range(count)) - set(by_name))
  if missing:
    raise ValueError(f'{len(by_name)} points, expected {count} (missing part '
                     f'names {_spans(missing)})')
  xy = [by_name[k] for k in range(count)]
  return geometry.from_dlib_xml(xy).reshape(-1, 2)


def _parse_xml_root(xml_path):
  try:
    root = ET.parse(xml_path).getroot()
  except (ET.ParseError, OSError) as e:
    raise DataError(f'{xml_path}: malformed XML: {e}') from e
  images = root.find('images')
  if root.tag != 'dataset' or images is None:
    raise DataError(f'{xml_path}: not dlib imglab XML (no <dataset><images>)')
  return images


def _xml_image_path(image_el, base, data_dir):
  """An <image>'s absolute path and its path relative to data_dir.

  Raises ValueError without file= or for a file outside data_dir, whose
  relative path would make a subset such as '../..'.
  """
  file = _attr(image_el, 'file')
  image_path = os.path.normpath(os.path.join(base, file))
  rel = _posix_rel(image_path, data_dir)
  if rel == '..' or rel.startswith('../'):
    raise ValueError(f'image path {file!r} is outside the data folder '
                     f'{os.path.abspath(data_dir)}')
  return image_path, rel


def read_xml(xml_path, data_dir):
  """Faces of a dlib imglab XML file -> (faces, skipped, ignored box count)."""
  xml_name = os.path.basename(xml_path)
  base = os.path.dirname(os.path.abspath(xml_path))
  faces, skipped, ignored = [], [], 0
  for image_el in _parse_xml_root(xml_path).findall('image'):
    boxes = image_el.findall('box')
    ignored += sum(b.get('ignore') == '1' for b in boxes)
    kept = [b for b in boxes if b.get('ignore') != '1']
    try:
      image_path, rel = _xml_image_path(image_el, base, data_dir)
    except ValueError as e:
      skipped += [Skipped(image_el.get('file', ''), index, f'{xml_name}: {e}')
                  for index in range(len(kept))]
      continue
    subset = subset_of(rel, data_dir)
    for index, box_el in enumerate(kept):
      try:
        landmarks, box = _xml_parts(box_el), _xml_box(box_el)
      except ValueError as e:
        skipped.append(Skipped(rel, index, f'{xml_name}: {e}'))
        continue
      problem = landmark_problem(landmarks, box)
      if problem:
        skipped.append(Skipped(rel, index, f'{xml_name}: {problem}'))
      else:
        faces.append(Face(image_path, rel, subset, index, landmarks, box))
  return faces, skipped, ignored


# Original 300-W .pts files.


def parse_pts(text):
  """[n, 2] points (1-based pixel centres) of a .pts file; ValueError if bad."""
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  if '{' not in lines or '}' not in lines:
    raise ValueError('malformed .pts: no { } around the points')
  open_at, close_at = lines.index('{'), lines.index('}')
  header = dict(line.split(':', 1) for line in lines[:open_at] if ':' in line)
  header = {k.strip(): v.strip() for k, v in header.items()}
  if header.get('version') != '1' or 'n_points' not in header:
    raise ValueError('malformed .pts header (expected version: 1, n_points: N)')
  rows = [line.split() for line in lines[open_at + 1:close_at]]
  if any(len(row) != 2 for row in rows):
    raise ValueError('malformed .pts: a point line without exactly two numbers')
  try:
    points = np.array(rows, np.float64).reshape(-1, 2)
  except ValueError as e:
    raise ValueError(f'malformed .pts: non-numeric point ({e})') from e
  if len(points) != int(header['n_points']):
    raise ValueError(f'malformed .pts: n_points is {header["n_points"]} '
                     f'but {len(points)} points are listed')
  return points


def _image_beside(pts_path, images):
  """The image of a .pts file: same stem, else the stem without `_N` (AFW).

  `images` maps stem + lowercased extension to file name, for the folder.
  """
  folder, stem = os.path.split(os.path.splitext(pts_path)[0])
  for candidate in (stem, re.sub(r'_\d+$', '', stem)):
    for ext in IMAGE_EXTENSIONS:
      if candidate + ext in images:
        return os.path.join(folder, images[candidate + ext])
  return None


def _pts_files(data_dir):
  """(pts path, its folder's images for `_image_beside`), in sorted order.

  Folder links are followed (300-W kept on another disk and linked in), each
  real folder once, so link loops end and no face is read twice.
  """
  visited = set()
  for folder, dirs, names in os.walk(data_dir, followlinks=True):
    real = os.path.realpath(folder)
    if real in visited:
      dirs[:] = []
      continue
    visited.add(real)
    dirs.sort()
    images = {}
    for name in names:
      stem, ext = os.path.splitext(name)
      images[stem + ext.lower()] = name
    for name in sorted(names):
      if name.lower().endswith('.pts'):
        yield os.path.join(folder, name), images


def _natural_key(path):
  return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', path)]


def read_pts_tree(data_dir):
  """Faces of every .pts file under data_dir -> (faces, skipped)."""
  by_image, skipped = {}, []
  for pts_path, images in _pts_files(data_dir):
    rel_pts = _posix_rel(pts_path, data_dir)
    image_path = _image_beside(pts_path, images)
    if image_path is None:
      skipped.append(Skipped(rel_pts, 0, 'no image beside it (.jpg/.jpeg/.png '
                             'with the same stem, or the stem without _N)'))
      continue
    by_image.setdefault(image_path, []).append(pts_path)
  faces = []
  for image_path, pts_paths in sorted(by_image.items()):
    rel = _posix_rel(image_path, data_dir)
    for index, pts_path in enumerate(sorted(pts_paths, key=_natural_key)):
      rel_pts = _posix_rel(pts_path, data_dir)
      try:
        # utf-8-sig: Windows tools often start the file with a BOM.
        with open(pts_path, encoding='utf-8-sig') as f:
          landmarks = geometry.from_pts(parse_pts(f.read()))
      except (OSError, UnicodeDecodeError, ValueError) as e:
        skipped.append(Skipped(rel_pts, index, str(e)))
        continue
      problem = landmark_problem(landmarks)
      if problem:
        skipped.append(Skipped(rel_pts, index, problem))
      else:
        faces.append(Face(os.path.abspath(image_path), rel,
                          subset_of(rel, data_dir), index, landmarks,
                          geometry.landmark_box(landmarks)))
  return faces, skipped


# Layout and split.


def _top_level_xmls(data_dir):
  return sorted(n for n in os.listdir(data_dir) if n.lower().endswith('.xml'))


def _labels_xmls(data_dir):
  return [n for n in _top_level_xmls(data_dir)
          if n.lower().startswith('labels')]


def _has_dlib_pair(data_dir):
  return all(os.path.isfile(os.path.join(data_dir, n))
             for n in (DLIB_TRAIN_XML, DLIB_TEST_XML))


def _single_xml(data_dir):
  """The one labels*.xml (else the one XML file) at the top level, or None."""
  for candidates in (_labels_xmls(data_dir), _top_level_xmls(data_dir)):
    if len(candidates) == 1:
      return candidates[0]
  return None


def detect_layout(data_dir):
  """'xml' for dlib's train/test pair or a single labels*.xml, else 'pts'."""
  if _has_dlib_pair(data_dir) or len(_labels_xmls(data_dir)) == 1:
    return 'xml'
  return 'pts'


def _check_data_dir(data_dir):
  if not os.path.isdir(data_dir):
    raise DataError(f'data folder {data_dir} does not exist')
  if not os.listdir(data_dir):
    raise DataError(f'data folder {data_dir} is empty')


def _split_by_hash(faces, val_fraction):
  train = [f for f in faces if not is_val(f.rel_path, val_fraction)]
  val = [f for f in faces if is_val(f.rel_path, val_fraction)]
  return train, val


def _read_dlib_pair(data_dir):
  """dlib's own split: its train and test XML files."""
  train, skipped, ignored = read_xml(
      os.path.join(data_dir, DLIB_TRAIN_XML), data_dir)
  val, skipped_val, ignored_val = read_xml(
      os.path.join(data_dir, DLIB_TEST_XML), data_dir)
  split = {'method': 'dlib_xml', 'train': DLIB_TRAIN_XML, 'val': DLIB_TEST_XML}
  return train, val, skipped + skipped_val, ignored + ignored_val, split


def _read_single_xml(data_dir, val_fraction):
  xml_name = _single_xml(data_dir)
  if xml_name is None:
    raise DataError(
        f'no single dlib XML file at the top of {data_dir} (found '
        f'{_top_level_xmls(data_dir) or "none"}); try --layout=pts')
  faces, skipped, ignored = read_xml(os.path.join(data_dir, xml_name), data_dir)
  split = {'method': 'hash', 'val_fraction': val_fraction,
           'annotations': xml_name}
  return *_split_by_hash(faces, val_fraction), skipped, ignored, split


def _read_pts(data_dir, val_fraction):
  faces, skipped = read_pts_tree(data_dir)
  split = {'method': 'hash', 'val_fraction': val_fraction}
  return *_split_by_hash(faces, val_fraction), skipped, 0, split


def _all_to(train, val, split, all_to):
  """Every face in split `all_to`, and the manifest's record of the split."""
  faces = {s: [] for s in SPLITS} | {all_to: train + val}
  record = {'method': 'all_to', 'all_to': all_to}
  if 'annotations' in split:
    record['annotations'] = split['annotations']
  return faces['train'], faces['val'], record


def _sorted_faces(faces):
  return sorted(faces, key=lambda f: (f.rel_path, f.face_index))


def load(data_dir, layout='auto', val_fraction=0.1, all_to=None):
  """Reads and splits a 300-W folder; DataError if it has no annotations.

  The split: dlib's train and test XML files when both are there, else each
  image goes to val with probability `val_fraction` by a stable hash of its
  path (`is_val`). `all_to` ('train' or 'val') instead puts every face in that
  split, e.g. dlib's test XML alone, to evaluate on all of it.
  """
  if layout not in LAYOUTS:
    raise DataError(f'--layout={layout}: expected one of {", ".join(LAYOUTS)}')
  if all_to not in (None, *SPLITS):
    raise DataError(f'--all_to={all_to}: expected {" or ".join(SPLITS)}')
  _check_data_dir(data_dir)
  if layout == 'auto':
    layout = detect_layout(data_dir)
  if layout == 'xml' and _has_dlib_pair(data_dir):
    parts = _read_dlib_pair(data_dir)
  elif layout == 'xml':
    parts = _read_single_xml(data_dir, val_fraction)
  else:
    parts = _read_pts(data_dir, val_fraction)
  train, val, skipped, ignored, split = parts
  if all_to:
    train, val, split = _all_to(train, val, split, all_to)
  if not train and not val and not skipped:
    raise DataError(f'no {layout} annotations found in {data_dir}')
  return Dataset(os.path.abspath(data_dir), layout, split,
                 _sorted_faces(train), _sorted_faces(val),
                 sorted(skipped, key=lambda s: (s.file, s.face_index)), ignored)
