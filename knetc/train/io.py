"""Saving and loading (kn.save / kn.load): see the functions below.

Objects other than arrays, numbers, strings and containers are stored only if their class
is registered with @serializable (optimizers, for example): loading then rebuilds them from
their attributes, and never executes code from the file."""

SERIALIZABLE = {}  # "module.QualName" -> class


def serializable(cls):
    """Class decorator: instances may be saved with kn.save (their attributes are stored)."""
    SERIALIZABLE[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return cls
