"""fairfix.data."""
