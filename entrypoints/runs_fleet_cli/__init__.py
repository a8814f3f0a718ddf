"""The ``runs-fleet`` command line: inspect labels, configuration and plugins."""
