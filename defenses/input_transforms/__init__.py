"""Input-transformation defenses (JPEG, bit-depth reduction, median filter) and the preprocessing wrapper."""
