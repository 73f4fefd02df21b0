"""One training run: config -> model -> trained -> measured -> run files on disk.

Importing `runs` (or `runs.config`) does not import torch; the model, data and trainer modules do.
"""
