"""fanout: news feed, chat, notifications and short links on one fan-out core."""

__version__ = "0.1.0"
__all__ = ["__version__"]
