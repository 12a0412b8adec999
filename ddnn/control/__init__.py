"""Run-time control of the edge: channel-aware mode selection and the SLO controller."""
