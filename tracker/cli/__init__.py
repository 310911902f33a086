"""The command line (``tracker …``): thin typer commands over the service functions, and the demo."""
