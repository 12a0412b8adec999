"""Edge node: shallow segment + early exits; answers confident samples, offloads the rest."""
