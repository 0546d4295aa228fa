"""sync-agent: keeps an offline mirror of documents held behind remote document APIs."""

__version__ = "0.1.0"
