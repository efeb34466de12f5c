"""txmdb — a catalogue and analysis platform for battery-materials X-ray studies."""

__version__ = "0.1.0"
