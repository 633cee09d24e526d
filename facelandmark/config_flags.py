"""absl flags derived from a config dataclass: one way for every entry point.

Each field becomes `--name`, typed from its annotation (int, float, bool, str,
Optional[...] of those, tuple[T, ...] as a comma-separated list), with the
help text, choices and --help group from `option(...)`'s metadata. Flags are
defined by the entry point's `if __name__ == '__main__'` block, never at import
time, so library modules can be imported side by side.
"""

import dataclasses
import sys
import types
import typing

from absl import app
from absl import flags
from absl import logging

_REQUIRED = object()
# --help lists the required flags, then these groups in this order, then the
# flags of no group.
GROUPS = ('data', 'model', 'schedule', 'augmentation', 'output')
_HELP_FLAGS = ('-?', '-help', '--help', '-helpshort', '--helpshort')


def option(default=_REQUIRED, help='', choices=None, group=None):  # pylint: disable=redefined-builtin
  """A config field with its flag's help text (allowed values, help group)."""
  if group is not None and group not in GROUPS:
    raise ValueError(f'option group must be one of {GROUPS}, got {group!r}')
  metadata = {'help': help, 'choices': tuple(choices) if choices else None,
              'group': group}
  if default is _REQUIRED:
    return dataclasses.field(metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


def _unwrap_optional(annotation):
  """(T, True) for Optional[T] / T | None, else (annotation, False)."""
  origin = typing.get_origin(annotation)
  if origin in (typing.Union, types.UnionType):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(args) == 1:
      return args[0], True
  return annotation, False


def _kind(annotation):
  """'bool', 'int', 'float', 'str' or ('list', element type)."""
  annotation, _ = _unwrap_optional(annotation)
  if typing.get_origin(annotation) is tuple:
    (element, *_) = typing.get_args(annotation)
    return 'list', element
  if annotation in (bool, int, float, str):
    return annotation.__name__
  raise TypeError(f'no flag type for annotation {annotation!r}')


def define_flags(config_class, required=(), skip=(), flag_values=flags.FLAGS):
  """Defines one flag per field of `config_class` (all but `skip`).

  Returns the --help sections for `run`: (title, flag names) pairs.
  """
  hints = typing.get_type_hints(config_class)
  # Filed under the program's own name: --help shows the main module's flags
  # only, and absl would file these under this module.
  common = {'flag_values': flag_values, 'module_name': sys.argv[0]}
  define = {'bool': flags.DEFINE_boolean, 'int': flags.DEFINE_integer,
            'float': flags.DEFINE_float, 'str': flags.DEFINE_string}
  for field in dataclasses.fields(config_class):
    if field.name in skip:
      continue
    default = (None if field.default is dataclasses.MISSING
               else field.default)
    help_text = field.metadata.get('help') or field.name
    choices = field.metadata.get('choices')
    kind = _kind(hints[field.name])
    if isinstance(kind, tuple):
      listed = None if default is None else [str(v) for v in default]
      flags.DEFINE_list(field.name, listed, help_text, **common)
    elif kind == 'str' and choices:
      flags.DEFINE_enum(field.name, default, choices, help_text, **common)
    else:
      define[kind](field.name, default, help_text, **common)
  if required:
    flags.mark_flags_as_required(list(required), flag_values=flag_values)
  return help_sections(config_class, required, skip)


def help_sections(config_class, required=(), skip=()):
  """[('required', names), (group, names) in GROUPS order, ('other', names)],
  fields in class order, empty sections left out."""
  fields = [f for f in dataclasses.fields(config_class)
            if f.name not in skip and f.name not in required]
  sections = [('required', list(required))]
  for group in (*GROUPS, None):
    sections.append((group or 'other', [
        f.name for f in fields if f.metadata.get('group') == group]))
  return [(title, names) for title, names in sections if names]


def format_help(sections, flag_values=flags.FLAGS):
  """The flags of `sections`, section by section, as absl words each flag."""
  lines = []
  for title, names in sections:
    lines.append(f'\n{title}:')
    for name in names:
      flag = flag_values[name]
      prefix = '--[no]' if flag.boolean else '--'
      lines.append(flags.text_wrap(f'{prefix}{name}: {flag.help}',
                                   indent='    ', firstline_indent='  '))
      notes = [f'default: {flag.default_as_str}' if flag.default_as_str
               else None, flag.parser.syntactic_help]
      lines.extend(flags.text_wrap(f'({note})', indent='    ')
                   for note in notes if note)
  return '\n'.join(lines)


def _element(value, element_type, name):
  try:
    if element_type is int:
      number = float(value)  # '5e4' is a fine step count.
      if number != int(number):
        raise ValueError(value)
      return int(number)
    return element_type(value)
  except ValueError as e:
    raise ValueError(f'--{name}: {value!r} is not a {element_type.__name__}'
                     ) from e


def config_from_flags(config_class, skip=(), flag_values=flags.FLAGS,
                      **values):
  """`config_class` from the parsed flags (fields in `skip` from `values`)."""
  hints = typing.get_type_hints(config_class)
  for field in dataclasses.fields(config_class):
    if field.name in skip:
      continue
    value = flag_values[field.name].value
    kind = _kind(hints[field.name])
    if isinstance(kind, tuple) and value is not None:
      value = tuple(_element(v.strip(), kind[1], field.name) for v in value)
    values[field.name] = value
  return config_class(**values)


# Errors a user can fix from the message alone: bad flags, files, data.
USER_ERRORS = (ValueError, OSError, FloatingPointError)


def run(main, program, sections=None):
  """app.run(main), turning USER_ERRORS into one line naming `program`.

  The traceback is still logged at debug level (--verbosity=1). With
  `sections` (define_flags' result), --help prints the flags grouped by them:
  absl's own --help lists a program's flags sorted by name.
  """
  def guarded(argv):
    try:
      return main(argv)
    except USER_ERRORS as e:
      logging.debug('%s failed', program, exc_info=True)
      sys.exit(f'{program}: {e}')

  def parse(argv):
    flag_args = argv[:argv.index('--')] if '--' in argv else argv
    if sections and set(flag_args) & set(_HELP_FLAGS):
      print(sys.modules['__main__'].__doc__ or '', end='')
      print(format_help(sections))
      print('\nTry --helpfull to get a list of all flags.')
      sys.exit(0)
    return app.parse_flags_with_usage(argv)

  app.run(guarded, flags_parser=parse)
