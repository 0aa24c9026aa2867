"""Data helpers."""

from .normalization import Standardize, standardize  # noqa: F401
