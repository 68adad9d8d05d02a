SELECT value FROM identity WHERE key = ?1
