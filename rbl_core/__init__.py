"""The core every layer builds on: threat model, data type, training loop, architectures, figures, io."""
