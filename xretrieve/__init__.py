"""xretrieve: export, embed, mine bitext and evaluate multilingual sentence encoders."""

__version__ = "0.1.0"
