"""nasq: joint neural architecture and quantization search on Ray Tune.

Implements JASQ (joint architecture and quantization search) and SpaceEvo
(quantization-friendly search-space evolution). See README.md.
"""

__version__ = "0.1.0"
