"""The error of the object registry (:mod:`.registry`, :mod:`.symmetries`)."""

__all__ = ["RegistryError"]


class RegistryError(ValueError):
    """An objects YAML file or a mesh cannot be used; the message says which and why."""
