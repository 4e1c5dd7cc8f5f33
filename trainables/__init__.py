"""What one trial does: the trainable registry and the built-in trainables.

``list_trainables()`` names them; ``resolve_trainable(name_or_import_path)`` returns a spec.
"""

from trainables.registry import (
    TRAINABLES,
    TrainableSpec,
    list_trainables,
    register_trainable,
    resolve_trainable,
    trainable,
)

__all__ = [
    "TRAINABLES",
    "TrainableSpec",
    "list_trainables",
    "register_trainable",
    "resolve_trainable",
    "trainable",
]
