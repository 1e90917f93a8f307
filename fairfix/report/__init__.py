"""fairfix.report."""
