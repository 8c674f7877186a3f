"""Deep clustering methods as scikit-learn estimators, trained with skorch on CPU or CUDA."""

from .methods.scan import SCAN
from .methods.sela import SeLa
from .neighbors import NeighborFeatures, NeighborMiner
from .pretext import SimCLR

__all__ = ["SCAN", "NeighborFeatures", "NeighborMiner", "SeLa", "SimCLR"]
__version__ = "0.1.0.dev0"
