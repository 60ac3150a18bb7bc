"""One module per event file format: a reader and, where the tests need fixtures, a writer."""

__all__: list[str] = []
