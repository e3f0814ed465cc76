"""Pure domain code: money, errors, value types. No I/O, no frameworks."""
