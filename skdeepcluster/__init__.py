"""Deep clustering methods as scikit-learn estimators, trained with skorch on CPU or CUDA."""

__version__ = "0.1.0.dev0"
