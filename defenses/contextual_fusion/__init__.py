"""Contextual fusion (Akumalla, Haney, Bazhenov 2020, arXiv 2011.09526) at small scale.

``scenes``: MNIST digits composited onto procedural texture scenes; ``model``: the late-fusion classifier over two
frozen streams; ``training``: the streams and the CE + alpha * ||theta_fg||^2 head; ``evaluation``: transferred and
end-to-end Linf attacks (re-measured) and Gaussian blur. See docs/contextual_fusion.md.
"""
