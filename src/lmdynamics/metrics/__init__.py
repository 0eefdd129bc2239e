"""Pure tensor metrics of training dynamics (formulas and sources: docs/science.md).

No files, no Lightning, no globals: live callbacks and offline runners call these same functions.
"""

from . import anisotropy as _anisotropy
from . import cka as _cka
from . import ov as _ov
from . import spectrum as _spectrum
from . import trends as _trends
from .anisotropy import *  # noqa: F403
from .cka import *  # noqa: F403
from .ov import *  # noqa: F403
from .spectrum import *  # noqa: F403
from .trends import *  # noqa: F403

# the public API is each module's own list, so a new function is exported by adding it there once
__all__ = [*_cka.__all__, *_spectrum.__all__, *_anisotropy.__all__, *_ov.__all__, *_trends.__all__]
