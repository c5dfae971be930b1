"""The model zoo: every architecture, built by name.

Importing this package imports every zoo module, so all models are registered:

    import models
    model = models.build("alphanet_v4", num_classes=200, input_shape=(64, 64, 3))
"""
from models import alphanet, bravonet, cis680, resnet, transfer  # noqa: F401  (imported to register their models)
from models.registry import build, get_builder, names, register_model

__all__ = ["build", "get_builder", "names", "register_model"]
