"""mailgun-validate: a Singer mapper that adds Mailgun's address validation to records."""
