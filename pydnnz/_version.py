"""The single source of the package version; setup.py and the C build read it."""
__version__ = "0.1.0"
