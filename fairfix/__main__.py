"""``python -m fairfix``: the same as the ``fairfix`` command."""

from fairfix.cli import main

if __name__ == "__main__":
    main()
