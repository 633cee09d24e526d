"""300-W data: parsing, conversion to TFRecords, tf.data reading, augmentation."""
