"""CogIP: measure and improve how well multimodal LLMs agree with human cognitive perception of images."""

__version__ = "0.1.0"

# The oldest transformers the trainers run on (TrainingArguments.activation_checkpointing came in 5.23);
# pyproject.toml's floor says the same (tested).
TRANSFORMERS_FLOOR = "transformers>=5.23"
