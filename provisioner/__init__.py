"""cdp: cloud distribution points on Azure, as code."""

__version__ = "0.1.0"
