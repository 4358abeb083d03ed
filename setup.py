"""Build the optional Cython extension; installing never fails for lack of a compiler.

Metadata lives in pyproject.toml. ``ext/_frames.pyx`` is compiled when Cython
and a C compiler are there; otherwise the pure-Python fallback
(``ext/_frames_py.py``) is used at run time. ``FRAMES_BUILD=required`` makes
a failed build an error (CI uses it to be sure the fast path is tested);
``FRAMES_BUILD=no`` skips it.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

MODE = os.environ.get("FRAMES_BUILD", "auto")  # auto | required | no


class OptionalBuildExt(build_ext):
    """Report a failed compile as a warning, unless FRAMES_BUILD=required."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            self._skip(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skip(exc)

    def _skip(self, exc: Exception) -> None:
        if MODE == "required":
            raise exc
        print(f"WARNING: ext._frames not built ({exc}); using the pure-Python codec", file=sys.stderr)


def extensions() -> list[Extension]:
    if MODE == "no":
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        if MODE == "required":
            raise
        print("WARNING: Cython not installed; using the pure-Python codec", file=sys.stderr)
        return []
    return cythonize(
        [Extension("ext._frames", ["ext/_frames.pyx"], extra_compile_args=["-O3"])],
        compiler_directives={"language_level": "3"},
        quiet=True,
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
