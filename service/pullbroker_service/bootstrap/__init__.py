"""Wiring: the one place adapters meet (main), the home folder, the development CA, and the
backend watch that runs beside the server."""
