"""What the commands do on files (the library API the CLI shells over), and their output."""
