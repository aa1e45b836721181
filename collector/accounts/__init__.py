"""Who may read and change: users with argon2 passwords, sessions, read tokens, the access rules."""
