"""The decoded-face file cache (`--cache=FOLDER`): one entry per shard file.

An entry holds a shard's faces in the shard's own order with their pixels
stored raw instead of as JPEG, so reading it decodes nothing. The training
input reads entries exactly as it reads shards (files shuffled per epoch,
records through the shuffle buffer, all seeded): a cache changes the speed,
never the order of the faces.

An entry is named by what shapes its bytes: the shard's path, size and
modification time, the crop size, and this format's version. View options
(box, view scale, augmentation) are not part of it: they apply to the decoded
crops later, in the train step, so runs that differ only in them share it.

Entries are written to a temporary file and renamed into place, so an entry
that exists is complete, whatever was killed when. A lock file names the
process building an entry: another run (two runs may share a folder) waits
for it instead of decoding the same shard twice; a lock whose process is gone
(a killed run) is removed, with a line saying so. The folder must be local:
process ids only mean something on this machine.
"""

import hashlib
import os
import socket
import time

import tensorflow as tf

from pipeline import records

# Bump when an entry's bytes change for the same shard: old entries are then
# left alone (and unused).
FORMAT_VERSION = 1
_SUFFIX = '.faces'
_POLL_SECONDS = 0.5


def entry_path(folder, shard, image_size):
  """The entry of `shard` (crops of `image_size` px) in `folder`."""
  stat = os.stat(shard)
  key = repr((FORMAT_VERSION, os.path.abspath(shard), stat.st_size,
              stat.st_mtime_ns, image_size))
  digest = hashlib.sha256(key.encode()).hexdigest()[:16]
  name = os.path.basename(shard).removesuffix('.tfrecord')
  return os.path.join(folder, f'{name}-{digest}{_SUFFIX}')


def parse(serialized):
  """One entry record -> records.parse_face's dict."""
  return records.parse_face(serialized, raw=True)


def entries(folder, shards, image_size, log):
  """The entries of `shards` in `folder`, in their order, building each that
  is missing (or waiting for the run building it)."""
  os.makedirs(folder, exist_ok=True)
  paths = [entry_path(folder, shard, image_size) for shard in shards]
  waiting_for = set()
  while True:
    missing = [(s, p) for s, p in zip(shards, paths) if not os.path.exists(p)]
    if not missing:
      return paths
    busy = []
    for shard, path in missing:
      if _build_once(shard, path, image_size, log):
        continue
      busy.append(path)
      if path not in waiting_for:
        waiting_for.add(path)
        log(f'{path}: being written by {_holder_text(path)}; waiting for it')
    if busy:
      time.sleep(_POLL_SECONDS)


def _build_once(shard, path, image_size, log):
  """Builds `path` unless another live process holds its lock (False)."""
  lock = path + '.lock'
  if not _take_lock(lock, log):
    return False
  try:
    if not os.path.exists(path):  # Another run may have just finished it.
      log(f'Decoding {shard} into the file cache: {path}')
      _write(shard, path, image_size)
  finally:
    _release(lock)
  return True


def _write(shard, path, image_size):
  """Decodes every face of `shard` into `path`, atomically."""
  temp = f'{path}.{os.getpid()}.tmp'
  faces = tf.data.TFRecordDataset(shard).map(
      records.parse_face, num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True)
  try:
    with tf.io.TFRecordWriter(temp) as writer:
      for face in faces.as_numpy_iterator():
        if face['image'].shape != (image_size, image_size, 3):
          raise ValueError(f'{shard}: a {face["image"].shape} face where the '
                           f'manifest says {image_size} px')
        writer.write(records.serialize_face(
            face['image'].tobytes(), image_size, face['landmarks'],
            face['box'], face['crop'], face['source'].decode(),
            face['subset'].decode(), face['face_index']))
    os.replace(temp, path)
  finally:
    if os.path.exists(temp):
      os.remove(temp)


def _holder():
  """This process as a lock holder: host, pid and start time (a pid alone
  may be reused by a new process after a crash)."""
  return f'{socket.gethostname()} {os.getpid()} {_start_time(os.getpid())}'


def _start_time(pid):
  """The process's start time in clock ticks since boot ('' if unknown)."""
  try:
    with open(f'/proc/{pid}/stat', encoding='ascii') as f:
      # Field 22; the command name (field 2) may hold spaces, not ')'.
      return f.read().rsplit(')', 1)[1].split()[19]
  except (OSError, IndexError):
    return ''


def _holder_text(path):
  try:
    with open(path + '.lock', encoding='utf-8') as f:
      host, pid, *_ = f.read().split() + ['', '']
    return f'process {pid} on {host}'
  except OSError:
    return 'another process'


def _alive(holder):
  """Whether a lock's holder text names a running process. One on another
  host cannot be checked and counts as running."""
  host, pid, *start = holder.split() + ['']
  if host != socket.gethostname():
    return True
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # Running, as another user.
  except ValueError:
    return False  # Not a holder text at all.
  return not start[0] or _start_time(int(pid)) == start[0]


def _take_lock(lock, log):
  """Takes `lock` (True), or False while a running process holds it. A lock
  of a process that is gone is removed first, with a line saying so."""
  mine = f'{lock}.{os.getpid()}'
  with open(mine, 'w', encoding='utf-8') as f:
    f.write(_holder())
  try:
    while True:
      try:
        # A hard link appears whole and fails if the lock exists: the lock
        # is never seen half written.
        os.link(mine, lock)
        return True
      except FileExistsError:
        pass
      try:
        with open(lock, encoding='utf-8') as f:
          holder = f.read()
      except FileNotFoundError:
        continue  # Released meanwhile: try again.
      if _alive(holder):
        return False
      _remove_stale(lock, holder, log)
  finally:
    os.remove(mine)


def _release(lock):
  try:
    os.remove(lock)
  except FileNotFoundError:
    pass  # Taken as stale by a run that misjudged us: it only duplicates work.


def _remove_stale(lock, holder, log):
  """Removes a dead holder's lock and its partial entry."""
  host, pid, *_ = holder.split() + ['', '']
  try:
    os.remove(lock)
  except FileNotFoundError:
    return  # Another run cleaned it up first.
  partial = f'{lock.removesuffix(".lock")}.{pid}.tmp'
  if os.path.exists(partial):
    os.remove(partial)
  log(f'{lock}: removed a stale lock of process {pid} on {host}, which is no '
      'longer running (a killed run); its entry is built again')
