"""Pure math shared by the counterfactual methods, unit-tested without models.

``core``: targets, scores, per-sample Adam and noise, distances. Further modules add the math of other
method families (sparse / l_p geometry, diffusion guidance); everything is re-exported here.
"""
from cflight.methods.functional.core import *  # noqa: F403
from cflight.methods.functional.core import OBJECTIVES  # noqa: F401
from cflight.methods.functional.guidance import *  # noqa: F403
from cflight.methods.functional.sparse import *  # noqa: F403
