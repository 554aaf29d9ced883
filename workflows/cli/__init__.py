"""What the command lines share: error reporting and download bars (``common``), the one flag builder that
generates every job command line from its config dataclass (``flags``)."""
