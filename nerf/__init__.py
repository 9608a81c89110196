"""A NeRF view-synthesis library: rays, sampling, encodings, fields, rendering, training."""
