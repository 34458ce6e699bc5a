"""coloc: self-supervised co-localization with Contrastive Attention Maps (Ki et al., ICCV 2021).

Importing the package is cheap (no torch): ``coloc --version`` and every job's ``--help`` read
:data:`__version__` from here before anything heavy is imported.
"""

__version__ = "0.1.0"
