"""The self-service key portal (issue 16): a user of the fronted service manages their own keys,
opened by a one-time link the service's backend asks the admin API (or an operator the CLI) for."""
