"""What the command lines share: error reporting and download bars (``common``)."""
