"""fairfix.correct."""
