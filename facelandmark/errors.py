"""The one error the live package raises for input a user can fix."""


class WebcamError(ValueError):
  """A source, output, detector or display that cannot be used; the message
  names the flag and says why. A ValueError, so entry points print it as one
  line (config_flags.py)."""
