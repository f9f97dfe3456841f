"""Server and hardware telemetry sampled during a benchmark (issue 14): see ``session.TelemetrySession``."""
