"""ditaccel: one-line sparse attention for diffusers video and image diffusion transformers.

    import ditaccel
    ditaccel.patch(pipe, "radial")   # or "neighborhood", "piecewise", "pyramid", "topk", or a config object
    video = pipe(prompt, ...).frames[0]
    ditaccel.unpatch(pipe)           # back to the exact original behaviour
"""

from .block_map import BlockMap, BlockMapRecorder
from .cost_model import CostModel
from .plugins.broadcast import Broadcast
from .patching import PatchHandle, Summary, is_patched, patch, summary, unpatch
from .pipelines import supported_models
from .plugins.neighborhood import Neighborhood
from .plugins.piecewise import Piecewise
from .plugins.pyramid import Pyramid
from .plugins.radial import Radial
from .plugins.residual_reuse import ResidualReuse
from .plugins.topk import TopK
from .presets import PRESETS
from .schedule import Schedule

__version__ = "0.1.0"

__all__ = [
    "BlockMap",
    "BlockMapRecorder",
    "Broadcast",
    "CostModel",
    "Neighborhood",
    "PRESETS",
    "PatchHandle",
    "Piecewise",
    "Pyramid",
    "Radial",
    "ResidualReuse",
    "Schedule",
    "Summary",
    "TopK",
    "is_patched",
    "patch",
    "summary",
    "supported_models",
    "unpatch",
]
