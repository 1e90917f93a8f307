"""fairfix.detect."""
