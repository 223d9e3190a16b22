"""Corpus synthesis, importers and text normalization."""
