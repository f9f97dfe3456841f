"""Hardware detection shared by every vendor plugin."""
