"""Property-based fuzzing of the two doors of runs-fleet that take text from outside: the
``runs-on`` label grammar and ``POST /webhook``. Each target runs at least 10,000
examples in the normal suite, so keep every example cheap."""
