"""target-brevo: a Singer target that applies Mailgun activity to Brevo."""
