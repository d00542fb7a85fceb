"""Read models built from the notification log of the event-sourced applications."""
