"""The ``pinnace`` command."""
