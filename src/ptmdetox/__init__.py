"""ptmdetox: purify pre-trained models of task-agnostic backdoors, and measure it."""

__version__ = "0.1.0"
