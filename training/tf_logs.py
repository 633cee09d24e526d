"""Imported first by every training-side entry point: TensorFlow's C++ INFO
and WARNING lines (CUDA probing on a CPU machine, CPU instruction notices)
off unless the user set TF_CPP_MIN_LOG_LEVEL. TensorFlow reads the variable
once, when it is first imported, so this must come before any import of it.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
