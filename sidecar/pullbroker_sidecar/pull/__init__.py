"""Pull engine, content store and exporters."""
