"""Fine-tuning and evaluation: data, augmentation, initialisation, the training loop and metrics."""
