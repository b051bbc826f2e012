"""The composition root: opens every component the settings ask for, in order, and closes them."""
