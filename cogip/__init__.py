"""CogIP: measure and improve how well multimodal LLMs agree with human cognitive perception of images."""

__version__ = "0.1.0"
