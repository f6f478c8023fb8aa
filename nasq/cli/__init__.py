"""The ``nasq`` command line: one module per verb, assembled in :mod:`nasq.cli.main`."""
