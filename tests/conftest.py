"""Suite-wide test settings.

Under CI (``CI`` set, as .ci/run's environment has it) hypothesis runs derandomized: property tests explore with a
fixed seed there, so a CI result is reproducible; local runs keep exploring new examples.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
