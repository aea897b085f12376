"""Broker settings: the config file (frozen dataclasses, a docstring per field) and its errors."""
