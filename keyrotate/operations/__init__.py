"""What an administrator does around a rotation: backup ZIPs, exposure after a leak, audits, the JWT secret."""
