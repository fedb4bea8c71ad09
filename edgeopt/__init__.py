"""edgeopt: fast deep-learning inference on AVX2 laptops."""
__version__ = "0.1.0"
