"""gptcli: a terminal chat and writing assistant running a local quantized language model."""

__version__ = "0.1.0"
