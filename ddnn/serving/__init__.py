"""gRPC plumbing shared by the services: error mapping, server construction, settings, conversions.

Importing :mod:`ddnn` does not import this package; only the services (and their tests) do.
"""
