"""The HTTP routes, one blueprint per resource; `helpers` holds what they share."""
