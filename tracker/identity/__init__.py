"""Who acts: user accounts, roles, authentication and electronic signatures."""
