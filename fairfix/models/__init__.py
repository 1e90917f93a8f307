"""fairfix.models."""
