"""Datasets spikefleet can build locally, with no download (see :mod:`.ndigits`)."""
