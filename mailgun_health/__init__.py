"""mailgun-health: an offline HTML page and an exit code on the health of sending domains."""
