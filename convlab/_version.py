"""convlab's version, in a module of its own so that code below the package's face
(the tuner's memory keys on it) can read it without importing ``convlab`` itself."""

__version__ = "0.1.0"
