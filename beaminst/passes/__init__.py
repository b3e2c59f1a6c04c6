"""The rewriting commands as passes over one working state, and the driver that runs them."""
