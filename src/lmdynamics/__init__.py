"""lmdynamics: train GPT-NeoX (Pythia-style) models and measure how they learn, layer by layer."""

__version__ = "0.1.0"
