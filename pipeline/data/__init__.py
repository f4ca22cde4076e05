"""Data stage: TFDS builders, augmentation layers and the tf.data pipeline."""
