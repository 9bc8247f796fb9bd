"""labkit: ten 2021 computer-vision papers, reimplemented at CPU scale, one module per paper."""
__version__ = "0.1.0"
