"""The core every layer builds on: threat model, data type, training loop, architectures, figures, io."""
from rbl_core.reproducibility import pin_cpu_kernels

pin_cpu_kernels()
