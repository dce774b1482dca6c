"""The refund domain: model, statuses and transitions, policy. Standard library only."""
