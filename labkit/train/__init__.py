"""One training loop for every chapter: ``fit``."""
from .loop import FitState, History, Hook, every, fit

__all__ = ["FitState", "History", "Hook", "every", "fit"]
