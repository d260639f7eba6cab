"""Infrastructure every layer uses: errors, atomic files and the output guard, progress,
devices, the settings vocabulary (``Device``, ``Backend``, ``Dtype``, ``Pooling``), integrity
records, interrupts, the Ray cluster connection, the cache directory, sizes. Imports nothing of
xretrieve outside ``core``."""
