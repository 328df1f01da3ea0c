"""Placeholder replaced by the connector's implementation."""


def read_files(*args, **kwargs):
    raise NotImplementedError
