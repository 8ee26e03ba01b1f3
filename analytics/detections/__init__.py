"""DET0002 detections, one module per analytic: ``an0005`` (network devices); the endpoint analytics join it later."""
