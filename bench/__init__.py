"""`make bench`: latency, AWS calls and import time of the hot routes beside their floors."""
