"""Build the optional C hot path; everything else is in pyproject.toml.

`optional=True`: without a C compiler the extension is skipped with a warning
and historymw runs its pure-Python hot path (historymw/capture.py), which has
the same behaviour and costs about 2 µs more per recorded call.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("historymw._speedups", ["historymw/_speedups.c"], optional=True)])
