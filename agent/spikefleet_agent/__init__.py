"""spikefleet-agent: the edge daemon that owns an Akida device. Never imports torch."""

__version__ = "0.1.0"
