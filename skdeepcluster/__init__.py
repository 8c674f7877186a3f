"""Deep clustering methods as scikit-learn estimators, trained with skorch on CPU or CUDA."""

from ._config import config_context, get_config, set_config
from ._training import TrainingDivergedError
from .methods.c2bin import C2BIN
from .methods.drc import DRC
from .methods.lsdc import LSDC
from .methods.scan import SCAN
from .methods.sela import SeLa
from .neighbors import NeighborFeatures, NeighborMiner
from .persistence import load, save
from .pretext import AutoEncoder, RotNet, SimCLR

__all__ = [
    "C2BIN",
    "DRC",
    "LSDC",
    "SCAN",
    "AutoEncoder",
    "NeighborFeatures",
    "NeighborMiner",
    "RotNet",
    "SeLa",
    "SimCLR",
    "TrainingDivergedError",
    "config_context",
    "get_config",
    "load",
    "save",
    "set_config",
]
__version__ = "0.1.0.dev0"
