"""One training loop for every chapter: ``fit``."""
from .loop import FitState, History, Hook, every, fit, progress_bar

__all__ = ["FitState", "History", "Hook", "every", "fit", "progress_bar"]
