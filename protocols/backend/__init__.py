"""The backend services behind the sessions: authentication and its limits, policy, delivery, local submission."""
