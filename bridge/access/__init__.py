"""Who may do what on the research side: API users, their roles and projects, their tokens (hashed)."""
