"""The one place that picks the compiled or the pure-Python frame codec.

``FRAMES_PURE_PYTHON=1`` in the environment forces the fallback (for tests
and for comparing the two); otherwise the Cython extension is used when it
was built at install time. :data:`BACKEND` says which one is loaded and is
reported by ``/healthz`` and ``manage.py check``.
"""

from __future__ import annotations

import os

if os.environ.get("FRAMES_PURE_PYTHON", "") not in ("", "0"):
    from ext._frames_py import apply_mask

    BACKEND = "python"
else:
    try:
        from ext._frames import apply_mask

        BACKEND = "cython"
    except ImportError:  # not built: no compiler at install time, or a source checkout
        from ext._frames_py import apply_mask

        BACKEND = "python"

__all__ = ["BACKEND", "apply_mask"]
