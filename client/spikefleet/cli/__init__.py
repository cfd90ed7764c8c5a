"""The ``spikefleet`` command line."""
