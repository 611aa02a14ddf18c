"""Typed parsers of provider-key secrets, one module per adapter (contract §5.1).

Bottom layer: imports nothing from aisix above `aisix.errors`. Each `parse(secret)` returns the
adapter's credential object or raises `ValueError` with a message that never contains the
secret; resource validation (on admin writes) and the providers (at snapshot build) use the
same parser.
"""
