"""crossvit-mtl: dual-branch cross-attention vision transformers from classification to
semantic segmentation and multi-task dense prediction."""
__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "__version__"]


def __getattr__(name):
    # Lazy so that `crossvit-mtl --help` and the data tools do not pay for building the zoo.
    if name in ("create_model", "list_models"):
        from crossvit_mtl import models

        return getattr(models, name)
    raise AttributeError(name)
