"""python -m facelandmark: the command (command.py)."""

from facelandmark import command

if __name__ == '__main__':
  command.main()
