"""The operator: kopf handlers that keep each GenerativeService's status true ."""
