"""Verification library: bounds (CROWN, alpha/beta-CROWN), Z3 and branch and bound, DLV, ONNX + VNN-LIB.

Imports rbl_core first, which pins torch's CPU kernels before any tensor op (rbl_core/reproducibility.py)."""
import rbl_core  # noqa: F401
