"""Thin Typer commands: each parses and validates, then calls a plain, importable function."""
