"""CogIP-Bench data: readers and writers of the published layout, the synthetic bench, validation."""
