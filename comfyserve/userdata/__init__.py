"""Per-user data: who the user is, their files under the user folder, and their UI settings."""
