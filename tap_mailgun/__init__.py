"""tap-mailgun: a Singer tap for Mailgun, built on the Meltano SDK."""
