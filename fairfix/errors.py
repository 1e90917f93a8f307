"""Exceptions with the exit codes of the CLI contract (DESIGN.md section 3).

Library code raises these; only the CLI turns them into a line on stderr and an
exit code.  Each message is one line that names the file, column or value.
"""

from __future__ import annotations


class FairfixError(Exception):
    """Base class: bad usage, bad input data, bad recipe or unusable model (exit 2)."""

    exit_code = 2


class UsageError(FairfixError):
    """An option or a combination of options that cannot work."""


class DataError(FairfixError):
    """A data file that cannot be read, or whose content does not fit the request."""


class ModelError(FairfixError):
    """A model, detector or bundle that cannot be loaded or does not match the data."""


class OutputExistsError(FairfixError):
    """An output path that exists and would be overwritten without ``--force``."""


def check_options(what: str, options: object, checks: dict[str, bool]) -> None:
    """Raise UsageError naming the first option whose check failed, with its value."""
    for name, ok in checks.items():
        if not ok:
            raise UsageError(f"{what} option {name}={getattr(options, name)!r} is out of range")


# Message templates that the tests assert (fairlearn keeps its messages as constants too).
MISSING_FILE = "{path}: no such file"
EMPTY_FILE = "{path}: the file is empty"
UNREADABLE_FILE = "{path}: cannot read as {fmt}: {reason}"
UNKNOWN_FORMAT = (
    "{path}: cannot tell the format from the extension; "
    "use .csv, .parquet or .jsonl (optionally .gz), or --input-format"
)
MISSING_COLUMN = "{path}: no column {column!r}; columns are: {columns}"
NULL_VALUES = (
    "{path}: column {column!r} has {count} empty/NaN value(s) (first at row {first}); "
    "pass --dropna to skip such rows"
)
MISSING_GROUPS = (
    "{path}: group column {column!r} has {count} missing value(s) (first at row {first}); "
    "pass --keep-missing-groups to audit them as the group '<missing>'"
)
NULL_VALUES_UNPLACED = (
    "{path}: column {column!r} has {count} empty/NaN value(s); pass --dropna to skip such rows"
)
MISSING_GROUPS_UNPLACED = (
    "{path}: group column {column!r} has {count} missing value(s); "
    "pass --keep-missing-groups to audit them as the group '<missing>'"
)
COUNTS_NOT_NUMERIC = "{path}: count column {column!r} is not numeric ({type}); counts must be whole numbers >= 0"
COUNTS_WITH_MODEL = "--counts takes --pred or --score, not --model: a counts table holds no model inputs"
BAD_COUNT = "{path}: count column {column!r} has {what} ({value}){where}; counts must be whole numbers >= 0"
SCORE_NOT_NUMERIC = "{path}: score column {column!r} is not numeric ({reason})"
SCORE_OUT_OF_RANGE = (
    "{path}: score column {column!r} has {count} value(s) outside [0, 1] (e.g. {example}); "
    "scores must be probabilities"
)
NOT_NUMERIC = "{path}: column {column!r} holds {value!r}, which is not a number (the column is numeric)"
ONE_LABEL = "{path}: label column {column!r} has one value only ({value!r}); need at least two"
OUTPUT_EXISTS = "{path}: exists; pass --force to overwrite it"
OUTPUT_UNWRITABLE = "{path}: cannot write: {reason}"
