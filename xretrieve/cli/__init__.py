"""The typer command line: parses, calls one library function, prints a table or JSON."""
