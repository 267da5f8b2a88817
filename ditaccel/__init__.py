"""ditaccel: one-line sparse attention for diffusers video and image diffusion transformers.

    import ditaccel
    ditaccel.patch(pipe, "radial")   # or "neighborhood", or a config object
    video = pipe(prompt, ...).frames[0]
    ditaccel.unpatch(pipe)           # back to the exact original behaviour
"""

from .patching import PatchHandle, Summary, is_patched, patch, summary, unpatch
from .pipelines import supported_models
from .plugins.neighborhood import Neighborhood
from .plugins.radial import Radial
from .presets import PRESETS
from .schedule import Schedule

__version__ = "0.1.0"

__all__ = [
    "Neighborhood",
    "PRESETS",
    "PatchHandle",
    "Radial",
    "Schedule",
    "Summary",
    "is_patched",
    "patch",
    "summary",
    "supported_models",
    "unpatch",
]
