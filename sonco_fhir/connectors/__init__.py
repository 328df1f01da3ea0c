"""Connectors read a source and yield `SourceRecord`s for the mapping engine."""
