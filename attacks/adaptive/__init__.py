"""Adaptive-evaluation wrappers of evasion attacks: defense-unaware transfer and EOT over random defenses."""
