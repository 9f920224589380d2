"""Defense libraries: DVERGE ensembles, RAW camera-pipeline preprocessing and baselines, contextual fusion.

Imports rbl_core first, which pins torch's CPU kernels before any tensor op (rbl_core/reproducibility.py)."""
import rbl_core  # noqa: F401
