"""semq-transforms: compact, verifiable embedding indexes built in batch with Apache Beam."""

__version__ = "0.1.0"
