"""The backend services behind the sessions (contracts.py): authentication and its limits,
policy, delivery, mail access, outbound; wiring.py composes them; local submission."""
