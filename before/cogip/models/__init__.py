"""Model families (one adapter interface, three families) and the offline tiny-model factory."""
