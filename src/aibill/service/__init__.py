"""The operations: each one a unit of work over the store."""
