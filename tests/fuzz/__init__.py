"""Coverage-guided fuzzing (atheris) of the SIP edge, SDP and the RTP path; see harness.py."""
