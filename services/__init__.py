"""The three ddnn processes: edge, cloud and load generator. Thin: settings, server, wiring."""
