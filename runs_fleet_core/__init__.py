"""runs-fleet's core: the domain, the ports, the use cases and the plugin system.

It imports only the standard library, attrs, cattrs and pluggy; every adapter to the
outside world lives in a plugin.
"""

__version__ = "0.1.0"
