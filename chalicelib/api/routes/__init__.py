"""The routes, one blueprint per caller: the app, the console, the order system, channels."""
