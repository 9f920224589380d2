"""Attack libraries: Foolbox and AutoAttack adapters, fooling images, feature-guided MCTS, CUDA, caption attacks.

Imports rbl_core first, which pins torch's CPU kernels before any tensor op (rbl_core/reproducibility.py)."""
import rbl_core  # noqa: F401
