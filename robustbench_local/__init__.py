"""The harness: data, zoo, threat models, evaluation, results store, leaderboard, tasks, the rbl CLI.

Imports rbl_core first, which pins torch's CPU kernels before any tensor op (rbl_core/reproducibility.py)."""
import rbl_core  # noqa: F401
