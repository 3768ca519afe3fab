"""cocoguest: the Confidential Containers guest components, in Python."""

__version__ = "0.1.0"
