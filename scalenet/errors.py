"""The exceptions SCALENet raises for bad input: one type per kind of problem, messages that name it."""

__all__ = [
    "ScalenetError", "ModelError", "UnsupportedOperatorError", "UnsupportedAttributeError",
    "ShapeError", "QuantisationError", "HardwareLimitError",
]


class ScalenetError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero."""


class ModelError(ScalenetError):
    """A model file or graph that is malformed, truncated or inconsistent."""


class UnsupportedOperatorError(ModelError):
    """An operator SCALENet does not implement; the message names the node and the op."""


class UnsupportedAttributeError(ModelError):
    """A supported operator with an attribute value SCALENet does not implement."""


class ShapeError(ScalenetError, ValueError):
    """A tensor whose shape or dtype does not match what the model or layer expects."""


class QuantisationError(ScalenetError, ValueError):
    """Quantisation parameters out of range (scale <= 0, zero point outside the type, NaN/inf...)."""


class HardwareLimitError(ScalenetError):
    """A layer or configuration beyond what the configured accelerator can run."""
