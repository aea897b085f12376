"""Secret backends behind one port: local (embedded), vault, aws."""
