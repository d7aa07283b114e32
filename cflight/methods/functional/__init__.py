"""Pure math shared by the counterfactual methods, unit-tested without models.

``core``: targets, scores, per-sample Adam and noise, distances. ``guidance``: diffusion guidance (DVCE).
``lp_geometry`` (with ``row_sort``): l_p norms, the exact LMO, projections onto ball ∩ box, steepest ascent,
random starts. The ascent loops, each in its own module over the shared ``ascent`` record and the APGD
``step_checkpoints``: ``frank_wolfe`` (Auto-Frank-Wolfe), ``auto_pgd`` (APGD), ``projected_gradient`` (PGD).
``acre``: AC-RE / ACE's signed step, objectives and change mask.
Everything public is re-exported here.
"""
from cflight.methods.functional.core import *  # noqa: F403
from cflight.methods.functional.core import OBJECTIVES  # noqa: F401
from cflight.methods.functional.guidance import *  # noqa: F403
from cflight.methods.functional.lp_geometry import *  # noqa: F403
from cflight.methods.functional.ascent import *  # noqa: F403
from cflight.methods.functional.step_checkpoints import *  # noqa: F403
from cflight.methods.functional.frank_wolfe import *  # noqa: F403
from cflight.methods.functional.auto_pgd import *  # noqa: F403
from cflight.methods.functional.projected_gradient import *  # noqa: F403
from cflight.methods.functional.acre import *  # noqa: F403
