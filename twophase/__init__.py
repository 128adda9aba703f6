"""twophase: convexity-aware two-phase training (Adam, then nonlinear conjugate gradient).

The engine package. It imports torch and never streamlit.
"""

__version__ = "0.1.0"
